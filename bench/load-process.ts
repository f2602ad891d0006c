import { devAddrFromLeBytes } from '../src/protocol/index.js';
import type { SentHeader } from '../sim/answer-checks.js';
import type { PendingRequest, SimulatedDevice } from '../sim/device.js';
import { NetworkServerClient } from '../sim/network-server.js';
import { ts002HttpResponse } from '../sim/ts002-transport.js';
import type { WireStyle } from '../sim/wire-style.js';
import { BENCH_NET_ID } from './fleet.js';
import { loadFleet } from './fleet-file.js';
import { type HttpAnswer, KeepAlivePool, headerValue, preparedPost } from './keep-alive-pool.js';
import { requestsDue } from './schedule.js';
import { SampleBuffer } from './stats.js';

/*
 * The load generator, as its own process (forked by bench/load.ts), so that the server and the load share the
 * machine's cores the way two machines' worth of work would, and the load's own cost is measured apart.
 *
 * Lean by design: every Join-request body is built before the clock starts (each device's next DevNonces,
 * MICs and TS002 JSON, as the bytes of whole HTTP requests), requests go over a pool of keep-alive connections
 * (bench/keep-alive-pool.ts), and an answer is checked
 * by parsing it and reading its Result. For a subset of the fleet — every `verifyEvery`-th device — every accept is
 * also checked as the NS and the device would (the NS simulator reads the answer and unwraps the network keys; the
 * device decrypts the accept, checks its MIC and the JoinNonce rule, and derives the keys, which must equal the
 * NS's): so the figures are for correct answers. Those checks run after the clock stops, in each device's order,
 * and only then does the answer count (its latency as measured when it arrived): done during the run, the
 * device-side crypto held up the reading of other answers and about doubled the p99 this process measured
 * (docs/performance.md).
 *
 * Closed loop (default): `concurrency` requests in flight, each sent when the previous one is answered.
 * Open loop (`rate`): requests start on a fixed schedule whatever the answers do, at most `concurrency` in
 * flight; latency counts from the scheduled start, so a slow server is not hidden (no coordinated omission),
 * and a request that cannot start because the cap is reached counts as shed by the load generator.
 */

export interface LoadSpec {
  readonly url: string;
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Open loop: requests started per second. Absent: closed loop at saturation. */
  readonly rate?: number | undefined;
  readonly timeoutMs: number;
  /** The network server's budget: a Success answered later than this after its (scheduled) start counts as late. */
  readonly deadlineMs?: number | undefined;
  readonly work: JoinWork | PostWork;
}

/** Join-requests from a fleet saved with saveFleet in `fleetRoot`; the fleet's counters are saved back after the run. */
export interface JoinWork {
  readonly kind: 'joins';
  readonly fleetRoot: string;
  readonly style: WireStyle;
  /** Every n-th device joins through the full NS simulator and has every accept checked; 0 = none. */
  readonly verifyEvery: number;
  /** Requests prepared ahead: enough for this many joins per second over warm-up and measurement. */
  readonly maxRate: number;
  /** Exactly this many Join-requests prepared per device instead (a storm: 1); a device that has sent them all rests. */
  readonly joinsPerDevice?: number | undefined;
  /** Seeded fleets (bench/bulk-provision.ts): join with this many devices picked at random over the whole fleet. */
  readonly sample?: number | undefined;
}

/** A JoinReq-sized TS002 body POSTed to an HTTP floor server; any 200 answer counts. */
export interface PostWork {
  readonly kind: 'posts';
}

export interface LoadReport {
  readonly joins: number;
  readonly seconds: number;
  readonly latenciesNs: Float64Array;
  readonly errors: Record<string, number>;
  readonly verified: number;
  /** Answers in the measured window by TS002 ResultCode (Success included), whatever their timing. */
  readonly results: Record<string, number>;
  /** With `deadlineMs`: Success answers that came after the deadline (also counted in `joins` and the latencies). */
  readonly late: number;
  /** CPU seconds this process spent from the start of the warm-up to the end of the run. */
  readonly cpuS: number;
}

export type LoadMessage =
  | { readonly type: 'started' }
  | { readonly type: 'result'; readonly report: LoadReport }
  | { readonly type: 'failed'; readonly message: string };

/** One request the load generator can send now. */
type Request = (pool: KeepAlivePool) => Promise<Outcome | Deferred>;
type Outcome = { ok: true } | { ok: false; what: string; resultCode?: string };
/** A Success whose accept is checked after the clock stops; it counts only once `check` says it is correct. */
type Deferred = { readonly deferred: () => Outcome };
interface RequestSource {
  /** The next request, or undefined when every device is busy. */
  next(): { request: Request; done: () => void } | undefined;
  finish(): void;
  readonly verified: () => number;
}

async function main(spec: LoadSpec): Promise<LoadReport> {
  const target = new URL(spec.url);
  const pool = new KeepAlivePool(target, spec.concurrency, spec.timeoutMs);
  const source = spec.work.kind === 'joins' ? joinSource(spec, spec.work, target) : postSource(target);
  try {
    return await drive(spec, pool, source);
  } finally {
    source.finish();
    pool.close();
  }
}

async function drive(spec: LoadSpec, pool: KeepAlivePool, source: RequestSource): Promise<LoadReport> {
  const latencies = new SampleBuffer();
  const errors: Record<string, number> = {};
  const fail = (what: string): void => void (errors[what] = (errors[what] ?? 0) + 1);
  const results: Record<string, number> = {};
  let joins = 0;
  let late = 0;
  const cpu0 = process.cpuUsage();
  process.send!({ type: 'started' } satisfies LoadMessage);
  const start = performance.now();
  const measureFrom = start + spec.warmupMs;
  const end = measureFrom + spec.durationMs;
  const inWindow = (t: number): boolean => t >= measureFrom && t < end;

  /** Counts an answer of the measured window. */
  const count = (scheduledAt: number, now: number, outcome: Outcome): void => {
    if (!inWindow(scheduledAt) || now >= end + spec.timeoutMs) return;
    const code = outcome.ok ? 'Success' : outcome.resultCode;
    if (code !== undefined) results[code] = (results[code] ?? 0) + 1;
    if (outcome.ok) {
      joins++;
      if (spec.deadlineMs !== undefined && now - scheduledAt > spec.deadlineMs) late++;
      latencies.push((now - scheduledAt) * 1e6);
    } else fail(outcome.what);
  };
  /** Answers whose accepts are checked after the clock stops, in the order they came. */
  const deferred: { readonly scheduledAt: number; readonly now: number; readonly check: () => Outcome }[] = [];

  const sendOne = async (scheduledAt: number): Promise<boolean> => {
    const next = source.next();
    if (next === undefined) {
      if (inWindow(scheduledAt)) fail('no idle device: raise --devices');
      return false;
    }
    let outcome: Outcome | Deferred;
    try {
      outcome = await next.request(pool);
    } catch (e) {
      outcome = { ok: false, what: `exception: ${(e as Error).message}` };
    } finally {
      next.done();
    }
    const now = performance.now();
    // Every deferred check runs, in or out of the window: each accept moves its device's JoinNonce on.
    if ('deferred' in outcome) deferred.push({ scheduledAt, now, check: outcome.deferred });
    else count(scheduledAt, now, outcome);
    return true;
  };

  if (spec.rate === undefined) {
    const worker = async (): Promise<void> => {
      while (performance.now() < end) {
        if (!(await sendOne(performance.now()))) await new Promise((r) => setImmediate(r));
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, worker));
  } else {
    const rate = spec.rate;
    const interval = 1000 / rate;
    let started = 0;
    let inFlight = 0;
    const running = new Set<Promise<unknown>>();
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now();
        const due = requestsDue(Math.min(now, end) - start, interval, end - start);
        for (; started < due; started++) {
          const scheduledAt = start + started * interval;
          if (inFlight >= spec.concurrency) {
            if (inWindow(scheduledAt)) fail(`shed by the load generator: ${spec.concurrency} already in flight`);
            continue;
          }
          inFlight++;
          const p = sendOne(scheduledAt).finally(() => { inFlight--; running.delete(p); });
          running.add(p);
        }
        if (now >= end) resolve();
        else setTimeout(tick, Math.max(0, Math.min(interval, 1)));
      };
      tick();
    });
    await Promise.all(running);
  }
  // CPU over the load only: the checks below are not what an NS spends on an answer.
  const cpu = process.cpuUsage(cpu0);
  // In completion order, which is each device's send order: a device is sent again only once answered.
  for (const d of deferred) {
    let outcome: Outcome;
    try {
      outcome = d.check();
    } catch (e) {
      outcome = { ok: false, what: `exception: ${(e as Error).message}` };
    }
    count(d.scheduledAt, d.now, outcome);
  }
  return { joins, seconds: spec.durationMs / 1000, latenciesNs: Float64Array.from(latencies.values()), errors, verified: source.verified(), results, late, cpuS: (cpu.user + cpu.system) / 1e6 };
}

/** Join-requests from the saved fleet: prepared bodies for most devices, live NS-simulator joins for the verified subset. */
function joinSource(spec: LoadSpec, work: JoinWork, target: URL): RequestSource {
  const loaded = loadFleet(work.fleetRoot, { sample: work.sample });
  const { provisioned, fleet } = loaded;
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${provisioned.nsToken}` };
  const ns = new NetworkServerClient({
    url: spec.url, token: provisioned.nsToken, netId: BENCH_NET_ID, kek: provisioned.nsKek, style: work.style,
    protocolVersion: '1.0', timeoutMs: spec.timeoutMs,
  });
  let seq = 0;
  const activation = (device: SimulatedDevice) => {
    const phyPayload = device.joinRequest();
    const macVersion = device.identity.macVersion;
    const s = seq++;
    return {
      phyPayload, devEui: device.identity.devEui, joinEui: device.identity.joinEui, macVersion,
      devAddr: devAddrFromLeBytes(Buffer.of(s & 0xff, (s >> 8) & 0xff, (s >> 16) & 0xff, 0x01)),
      dlSettings: macVersion === '1.1' ? 0x83 : 0x03, rxDelay: 1,
    };
  };
  const checked = (i: number): boolean => work.verifyEvery > 0 && i % work.verifyEvery === 0;
  const rounds = work.joinsPerDevice ?? Math.ceil((work.maxRate * (spec.warmupMs + spec.durationMs)) / 1000 / fleet.length) + 2;
  // Each device's requests, in DevNonce order; a device is sent only when idle, so they arrive in order. A checked
  // device's also keep what its accept is checked against: the request's header and the device's pending request.
  const prepare = (device: SimulatedDevice, withCheck: boolean): Prepared => {
    const built = ns.joinReqMessage(activation(device));
    const bytes = preparedPost(target, headers, JSON.stringify(built.message));
    return withCheck ? { bytes, checkedAgainst: { header: built.header, pending: device.pending } } : { bytes };
  };
  const prepared = fleet.map((device, i) => Array.from({ length: rounds }, () => prepare(device, checked(i))));
  const cursor = new Uint32Array(fleet.length);
  const idle: number[] = fleet.map((_, i) => i);
  let idleHead = 0;
  let verified = 0;

  const request = (p: Prepared, device: SimulatedDevice): Request => async (pool) => {
    const res = await pool.request(p.bytes);
    const outcome = answerOutcome(res);
    const against = p.checkedAgainst;
    if (!outcome.ok || against === undefined) return outcome;
    return { deferred: () => check(device, against, res) };
  };
  // The NS simulator reads the answer exactly as when it sends the request itself; then the device takes the accept.
  const check = (device: SimulatedDevice, against: CheckedAgainst, res: HttpAnswer): Outcome => {
    const ans = ns.activationAnswer(against.header, ts002HttpResponse(res.status, headerValue(res.head, 'content-type'), res.body.toString()));
    if (!ans.ok) return { ok: false, ...(ans.kind === 'result' ? { resultCode: ans.resultCode } : {}), what: ans.kind === 'result' ? `Result ${ans.resultCode}${ans.description ? `: ${ans.description}` : ''}` : `${ans.kind}: ${ans.detail}` };
    const r = device.receiveJoinAccept(ans.phyPayload, against.pending);
    verified++;
    if (!r.accepted) return { ok: false, what: `device dropped the accept: ${r.reason}` };
    const nsKey = ans.nsKeys.scheme === 'legacy' ? ans.nsKeys.nwkSKey : ans.nsKeys.fNwkSIntKey;
    const devKey = r.keys.scheme === 'legacy' ? r.keys.nwkSKey : r.keys.fNwkSIntKey;
    return nsKey.equals(devKey) ? { ok: true } : { ok: false, what: 'NS key differs from the device key' };
  };

  return {
    next() {
      if (idleHead === idle.length) return undefined;
      const i = idle[idleHead++]!;
      if (idleHead > 4096 && idleHead * 2 > idle.length) idle.splice(0, idleHead), (idleHead = 0);
      // With joinsPerDevice, a device that has sent its prepared requests rests (a storm: each device joins once).
      const done = (): void => void (work.joinsPerDevice !== undefined && cursor[i]! >= rounds ? undefined : idle.push(i));
      const p = prepared[i]![cursor[i]!++];
      if (p === undefined) throw new RangeError(`prepared requests used up (${rounds} per device): raise --max-rate`);
      return { request: request(p, fleet[i]!), done };
    },
    finish() {
      loaded.save();
    },
    verified: () => verified,
  };
}

/** A request's bytes, and for a checked device what its answer is checked against. */
interface Prepared {
  readonly bytes: Buffer;
  readonly checkedAgainst?: CheckedAgainst;
}

/** The request's header (the NS simulator reads the answer with it) and the device's request it answers. */
interface CheckedAgainst {
  readonly header: SentHeader;
  readonly pending: PendingRequest | null;
}

/** Success is an HTTP 200 JoinAns whose Result is Success; anything else is a failure, named. */
function answerOutcome(res: HttpAnswer): Outcome {
  if (res.status !== 200) return { ok: false, what: `HTTP ${res.status}` };
  const answer = JSON.parse(res.body.toString()) as { MessageType?: unknown; Result?: { ResultCode?: unknown; Description?: unknown } };
  const code = answer.Result?.ResultCode;
  if (code !== 'Success') return { ok: false, resultCode: String(code), what: `Result ${String(code)}${typeof answer.Result?.Description === 'string' ? `: ${answer.Result.Description}` : ''}` };
  if (answer.MessageType !== 'JoinAns') return { ok: false, what: `answered with ${String(answer.MessageType)}` };
  return { ok: true };
}


/** The HTTP floors: a JoinReq-sized TS002 body whose DevEUI varies so the durable floor spreads over its rows. */
function postSource(target: URL): RequestSource {
  // Prepared like the joins' requests, so the floors measure the server and not the building of requests.
  const headers = { 'content-type': 'application/json' };
  const bodies = Array.from({ length: 0x10000 }, (_, seq) => preparedPost(target, headers, floorBody(seq)));
  let seq = 0;
  const request: Request = async (pool) => {
    const res = await pool.request(bodies[seq++ & 0xffff]!);
    return res.status === 200 ? { ok: true } : { ok: false, what: `HTTP ${res.status}` };
  };
  return { next: () => ({ request, done: () => undefined }), finish: () => undefined, verified: () => 0 };
}

function floorBody(seq: number): string {
  const devEui = `70B3D57ED000${(seq & 0xffff).toString(16).padStart(4, '0').toUpperCase()}`;
  return JSON.stringify({
    ProtocolVersion: '1.0', SenderID: '00BE0C', ReceiverID: '70B3D57ED0000001', TransactionID: seq, MessageType: 'JoinReq',
    SenderNSID: '70B3D57ED0000000', MACVersion: '1.0.3', PHYPayload: '00010000D07ED5B3700000000000000000A1B2C3D4E5F6', DevEUI: devEui,
    DevAddr: '01BE0C00', DLSettings: '03', RxDelay: 1, CFList: '184F84E85684B85E84886684586E8400',
  });
}

process.once('message', (spec: LoadSpec) => {
  main(spec).then(
    (report) => process.send!({ type: 'result', report } satisfies LoadMessage, () => process.exit(0)),
    (e: unknown) => process.send!({ type: 'failed', message: (e as Error).message } satisfies LoadMessage, () => process.exit(1)),
  );
});
process.once('disconnect', () => process.exit(1));
