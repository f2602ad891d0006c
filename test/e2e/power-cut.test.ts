import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { CONFIG_FILE, type JoinkeepConfig } from '../../src/app/config.js';
import { initDataDir } from '../../src/app/init.js';
import { openJoinkeep } from '../../src/app/joinkeep.js';
import { TEST_KILL_BEFORE_ANSWER_ENV } from '../../src/app/serve.js';
import { addApplicationServer, addNetworkServer } from '../../src/commissioning/peers.js';
import { addKek } from '../../src/provisioning/keks.js';
import { type MacVersion, devAddrFromLeBytes, eui64FromBeHex, isLoRaWAN11, netIdFromBeHex } from '../../src/protocol/index.js';
import type { SessionRecord } from '../../src/storage/storage.js';
import { addFleet } from '../../sim/add-fleet.js';
import { SimulatedDevice, uniqueRandomDevNonces } from '../../sim/device.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { NetworkServerClient } from '../../sim/network-server.js';
import { TransportError, postTs002 } from '../../sim/ts002-transport.js';
import { tempRoot } from '../helpers/cli-run.js';
import { createTestDatabase } from '../helpers/postgres.js';

/*
 * The durability rule (docs/storage.md, "Durability"; STYLE rule 5), tested by cutting the process: an answer leaves
 * only after the nonce state it depends on is committed, so a process that dies at any moment — between COMMIT and
 * answer in particular — never makes Joinkeep issue a JoinNonce twice or accept a DevNonce twice.
 *
 * Real `joinkeep serve` processes, real HTTP, one Join-request in flight per device at a time (so each request's fate
 * is known exactly: a device's DevNonces never repeat, and a stored session names the DevNonce it answered).
 *
 * - Cut between commit and answer: `serve` armed with JOINKEEP_TEST_KILL_BEFORE_ANSWER=n (test only; src/backend/
 *   server.ts) SIGKILLs itself right before writing its n-th Success, while the other devices' requests are waiting
 *   for, inside, or just out of a group commit. After a restart on the same data directory: every accept a device
 *   received is stored; re-sending an unanswered Join-request is refused as a DevNonce replay if and only if it was
 *   committed; every later JoinNonce is greater than every one committed before the cut; none is used twice.
 * - Chaos: start, load, SIGKILL from outside at a random moment, restart, a few times over. No device ever sees a
 *   JoinNonce twice (1.1: or one not greater than the last), and every accept a device saw is stored.
 *
 * A SIGKILL loses what the process had not handed to the kernel; it does not lose what the kernel had not written
 * to disk. What these tests prove is the order (commit, then answer) across a crash; the fsync settings that carry
 * it through a power cut are checked by test/storage/durability.test.ts.
 */

const JOIN_EUI = eui64FromBeHex('70B3D57ED000C077');
const NET_ID = netIdFromBeHex('0000C0');
const AS_ID = 'power-cut-as';
/** Half 1.0.3 (random DevNonces), half 1.1 (DevNonce counter; the device wants every JoinNonce greater than the last). */
const DEVICES = 24;
/** The armed server dies before its answer to this Success: each device has joined about three times by then. */
const KILL_AT = 3 * DEVICES + 7;
const CHAOS_CYCLES = 4;
/** A cycle's load runs this long (ms, drawn uniformly) before the SIGKILL from outside. */
const CHAOS_KILL_AFTER_MS = [50, 1200] as const;
/** Generous bounds for a slow, shared CI machine: they end a broken run, they never judge speed. */
const REQUEST_TIMEOUT_MS = 60_000;
const EXIT_TIMEOUT_MS = 30_000;
const REPLAY = /DevNonce \d+ of device [0-9A-F]{16} was (not greater than the last one|used before)/;

/** What one device was told, in order; every accept it took, with the DevNonce it answered. */
interface Accept {
  readonly joinNonce: number;
  readonly devNonce: number;
}

/** A device with the record of what happened to it, and the last Join-request it sent if it got no answer. */
class Tracked {
  readonly accepts: Accept[] = [];
  unanswered: { readonly phy: Buffer; readonly devNonce: number } | undefined;
  constructor(readonly device: SimulatedDevice) {}
  get devEui(): string {
    return this.device.identity.devEui;
  }
  get lorawan11(): boolean {
    return isLoRaWAN11(this.device.identity.macVersion);
  }
}

type SendResult = { readonly kind: 'accepted'; readonly joinNonce: number } | { readonly kind: 'refused'; readonly resultCode: string; readonly description: string } | { readonly kind: 'unanswered' };

interface Site {
  readonly dataDir: string;
  readonly fleet: readonly Tracked[];
  readonly ns: NetworkServerClient;
  readonly nsToken: string;
  readonly agent: http.Agent;
  /** Every server started on this site: killed on every path in `cleanup`. */
  readonly servers: RunningServer[];
  cleanup(): Promise<void>;
}

/**
 * A data directory (SQLite, or a fresh PostgreSQL database) with the software keystore, an NS and an AS with KEKs,
 * and the fleet, provisioned the way the other end-to-end tests do. Sessions are never pruned here (every accept
 * must stay checkable) and admission control is off (every request reaches the join engine; none is shed).
 */
async function prepareSite(backend: 'sqlite' | 'postgres'): Promise<Site> {
  const root = await tempRoot(`joinkeep-power-cut-${backend}-`);
  const database = backend === 'postgres' ? await createTestDatabase() : undefined;
  const servers: RunningServer[] = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: DEVICES });
  const cleanup = async (): Promise<void> => {
    agent.destroy();
    for (const s of servers) await s.stop();
    await database?.drop();
    await root.cleanup();
  };
  try {
    const config = await initDataDir(root.dataDir, { storage: database ? { kind: 'postgres', url: database.url } : undefined });
    const edited: JoinkeepConfig = { ...config, backend: { ...config.backend, admission: false }, join: { ...config.join, sessionLimit: 1_000_000 } };
    await writeFile(join(root.dataDir, CONFIG_FILE), `${JSON.stringify(edited, null, 2)}\n`, { mode: 0o600 });

    const importKek = { label: 'factory-import', key: randomBytes(16) };
    const nsKek = { label: 'ns-0000C0', key: randomBytes(16) };
    const nsToken = randomBytes(24).toString('hex');
    const fleet: Tracked[] = [];
    for (let i = 0; i < DEVICES; i++) {
      const macVersion: MacVersion = i % 2 === 0 ? '1.0.3' : '1.1';
      const roots = { appKey: randomBytes(16), ...(macVersion === '1.1' ? { nwkKey: randomBytes(16) } : {}) };
      const devEui = eui64FromBeHex(`C0FFEE${i.toString(16).padStart(10, '0')}`);
      fleet.push(new Tracked(new SimulatedDevice({ devEui, joinEui: JOIN_EUI, macVersion, roots }, undefined, { randomDevNonce: uniqueRandomDevNonces() })));
    }
    const jk = await openJoinkeep(root.dataDir, { logger: pino({ level: 'silent' }) });
    try {
      const deps = { storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'test' };
      await addKek(deps, importKek.label, Buffer.from(importKek.key));
      await addKek(deps, nsKek.label, Buffer.from(nsKek.key));
      await addKek(deps, 'as-power-cut', randomBytes(16));
      await addNetworkServer(deps, { netId: NET_ID, token: nsToken, kekLabel: nsKek.label });
      await addApplicationServer(deps, { asId: AS_ID, token: randomBytes(24).toString('hex'), kekLabel: 'as-power-cut' });
      await addFleet(jk, fleet.map((t) => t.device), { importKek, homeNetId: NET_ID, asId: AS_ID, actor: 'test', parallelism: 4 });
    } finally {
      await jk.close();
    }
    // ChirpStack's wire style: a random TransactionID per message, so a re-sent frame is a new BI transaction.
    const ns = new NetworkServerClient({ url: 'http://unused.invalid/', token: nsToken, netId: NET_ID, kek: nsKek, style: 'chirpstack', agent });
    return { dataDir: root.dataDir, fleet, ns, nsToken, agent, servers, cleanup };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/** `joinkeep serve` on the site; armed: it SIGKILLs itself before its `killAt`-th Success. Disarmed explicitly otherwise. */
async function startOn(site: Site, killAt?: number): Promise<RunningServer> {
  const server = await startServer(site.dataDir, { readyTimeoutMs: 60_000, extraEnv: { [TEST_KILL_BEFORE_ANSWER_ENV]: killAt === undefined ? '' : String(killAt) } });
  site.servers.push(server);
  return server;
}

/** Settles with how the server ended; fails the test if it is still alive after a generous bound. */
async function deathOf(server: RunningServer): Promise<NodeJS.Signals | number | null> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`joinkeep serve (pid ${server.pid}) still running ${EXIT_TIMEOUT_MS} ms after it should have died`)), EXIT_TIMEOUT_MS);
  });
  try {
    const { code, signal } = await Promise.race([server.exited, bound]);
    return signal ?? code;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One Join-request frame to the server, as the NS wraps it. A Success is given to the device, which must accept it
 * (1.1: JoinNonce greater than the last it accepted; 1.0.3: not equal to it); what it accepted is recorded. No
 * answer (the process died: reset or refused connection) is "unanswered".
 */
async function send(site: Site, server: RunningServer, t: Tracked, phy: Buffer): Promise<SendResult> {
  const { devEui, joinEui, macVersion } = t.device.identity;
  const devNonce = phy.readUInt16LE(17);
  const built = site.ns.joinReqMessage({ phyPayload: phy, devEui, joinEui, macVersion, devAddr: devAddrFromLeBytes(randomBytes(4)), dlSettings: isLoRaWAN11(macVersion) ? 0x80 : 0x00, rxDelay: 1 });
  let res;
  try {
    res = await postTs002({ url: server.url, token: site.nsToken, agent: site.agent, timeoutMs: REQUEST_TIMEOUT_MS }, built.message);
  } catch (error) {
    if (!(error instanceof TransportError)) throw error;
    t.unanswered = { phy, devNonce };
    return { kind: 'unanswered' };
  }
  t.unanswered = undefined;
  const answer = site.ns.activationAnswer(built.header, res);
  assert.deepEqual(answer.issues, [], `${devEui}: the answer deviates from TS002`);
  if (!answer.ok) {
    assert.equal(answer.kind, 'result', `${devEui}: DevNonce ${devNonce}: ${answer.kind === 'result' ? '' : answer.detail}`);
    return { kind: 'refused', resultCode: answer.resultCode, description: answer.description ?? '' };
  }
  const outcome = t.device.receiveJoinAccept(answer.phyPayload);
  assert.ok(outcome.accepted, `${devEui} (${macVersion}) accepts the Join-accept to DevNonce ${devNonce}: ${outcome.accepted ? '' : outcome.detail}`);
  t.accepts.push({ joinNonce: outcome.joinNonce, devNonce });
  return { kind: 'accepted', joinNonce: outcome.joinNonce };
}

/** New Join-requests from every device, one in flight per device, until its request goes unanswered (or `maxJoins`). */
async function joinUntilCut(site: Site, server: RunningServer, maxJoins: number): Promise<void> {
  await Promise.all(
    site.fleet.map(async (t) => {
      for (let i = 0; i < maxJoins; i++) {
        const r = await send(site, server, t, t.device.joinRequest());
        if (r.kind === 'unanswered') return;
        assert.equal(r.kind, 'accepted', `${t.devEui}: a new DevNonce is accepted, got ${JSON.stringify(r)}`);
      }
    }),
  );
}

/** Every stored session of every device of the site, read through a fresh open of the data directory. */
async function storedSessions(site: Site): Promise<Map<string, SessionRecord[]>> {
  const jk = await openJoinkeep(site.dataDir, { logger: pino({ level: 'silent' }) });
  try {
    const out = new Map<string, SessionRecord[]>();
    for (const t of site.fleet) {
      const sessions = await jk.storage.listSessions(t.device.identity.devEui);
      const state = await jk.storage.getJoinState(t.device.identity.devEui, t.device.identity.joinEui);
      const joinNonces = sessions.map((s) => s.joinNonce);
      assert.equal(new Set(joinNonces).size, joinNonces.length, `${t.devEui}: a JoinNonce is stored in two sessions: ${joinNonces}`);
      // Sessions are never pruned here, so the counter is the newest session's JoinNonce: no nonce moved without one.
      assert.equal(state.lastJoinNonce, Math.max(0, ...joinNonces), `${t.devEui}: the JoinNonce counter matches the sessions`);
      out.set(t.devEui, sessions);
    }
    return out;
  } finally {
    await jk.close();
  }
}

/**
 * What holds at any time, over the whole history: each accept a device received is stored (same JoinNonce, same
 * DevNonce), no device accepted a JoinNonce twice, and a 1.1 device's JoinNonces only increased.
 */
function assertEveryAcceptStored(site: Site, stored: Map<string, SessionRecord[]>): void {
  for (const t of site.fleet) {
    const sessions = stored.get(t.devEui)!;
    for (const a of t.accepts) {
      const s = sessions.find((x) => x.joinNonce === a.joinNonce);
      assert.ok(s !== undefined, `${t.devEui}: JoinNonce ${a.joinNonce} was answered (DevNonce ${a.devNonce}) but is not stored: the answer left before its commit`);
      assert.equal(s.devNonce, a.devNonce, `${t.devEui}: JoinNonce ${a.joinNonce} answered DevNonce ${a.devNonce}, but the stored session has DevNonce ${s.devNonce}`);
    }
    const seen = t.accepts.map((a) => a.joinNonce);
    assert.equal(new Set(seen).size, seen.length, `${t.devEui}: the device received a JoinNonce twice: ${seen}`);
    if (t.lorawan11) assert.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]!), `${t.devEui} (1.1): JoinNonces not increasing: ${seen}`);
  }
}

const maxJoinNonce = (sessions: readonly SessionRecord[]): number => Math.max(0, ...sessions.map((s) => s.joinNonce));

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`${backend} + software keystore / power cut between commit and answer`, { timeout: 240_000 }, () => {
    let site: Site;
    before(async () => {
      site = await prepareSite(backend);
    });
    after(async () => {
      await site?.cleanup();
    });

    test(`serve SIGKILLs itself before its ${KILL_AT}th answer under load / after restart: every accept stored, an unanswered Join-request is a replay iff committed, later JoinNonces greater than every committed one, none used twice`, async (t) => {
      const armed = await startOn(site, KILL_AT);
      // Each device alone could reach the cut: if it never comes (a broken kill point), the loops end and the test fails.
      await joinUntilCut(site, armed, KILL_AT);
      assert.equal(await deathOf(armed), 'SIGKILL', 'the armed server killed itself');
      const answered = site.fleet.reduce((n, d) => n + d.accepts.length, 0);
      assert.ok(answered < KILL_AT, `at most ${KILL_AT - 1} answers left before the cut, got ${answered}`);
      assert.ok(site.fleet.every((d) => d.unanswered !== undefined), 'every device was left with an unanswered Join-request');

      const server = await startOn(site);
      const storedAtCut = await storedSessions(site);
      assertEveryAcceptStored(site, storedAtCut);
      const committed = (d: Tracked): boolean => storedAtCut.get(d.devEui)!.some((s) => s.devNonce === d.unanswered!.devNonce);
      const cutAfterCommit = site.fleet.filter(committed);
      // The KILL_AT-th Success itself was committed and never answered: the cut really fell between commit and answer.
      assert.ok(cutAfterCommit.length >= 1, 'at least one Join-request was committed and never answered');
      t.diagnostic(
        `${backend}: ${answered} accepts before the cut; unanswered Join-requests: ${cutAfterCommit.length} committed, ` +
          `${DEVICES - cutAfterCommit.length} not committed (in flight before their commit, or sent after the cut)`,
      );

      await Promise.all(
        site.fleet.map(async (d) => {
          const highestBefore = maxJoinNonce(storedAtCut.get(d.devEui)!);
          const wasCommitted = committed(d);
          const again = await send(site, server, d, d.unanswered!.phy);
          if (wasCommitted) {
            assert.equal(again.kind, 'refused', `${d.devEui}: its committed Join-request, sent again, must be refused as a replay, got ${JSON.stringify(again)}`);
            assert.equal(again.resultCode, 'JoinReqFailed');
            assert.match(again.description, REPLAY);
          } else {
            assert.equal(again.kind, 'accepted', `${d.devEui}: its Join-request never committed, sent again, is new to the Join Server, got ${JSON.stringify(again)}`);
            assert.ok(again.joinNonce > highestBefore, `${d.devEui}: JoinNonce ${again.joinNonce} after the restart must exceed ${highestBefore}, committed before the cut`);
          }
          // The device's next Join-request (new DevNonce): a JoinNonce no one was ever given, greater than all before.
          const next = await send(site, server, d, d.device.joinRequest());
          assert.equal(next.kind, 'accepted', `${d.devEui}: a new DevNonce after the restart is accepted, got ${JSON.stringify(next)}`);
          assert.ok(next.joinNonce > highestBefore, `${d.devEui}: JoinNonce ${next.joinNonce} after the restart must exceed ${highestBefore}, committed before the cut`);
        }),
      );
      await server.stop();
      assertEveryAcceptStored(site, await storedSessions(site));
    });
  });

  describe(`${backend} + software keystore / chaos: ${CHAOS_CYCLES} × (serve, load, SIGKILL from outside at a random moment)`, { timeout: 240_000 }, () => {
    let site: Site;
    before(async () => {
      site = await prepareSite(backend);
    });
    after(async () => {
      await site?.cleanup();
    });

    test('no device ever sees a JoinNonce twice or, 1.1, one not greater than the last; every accept a device saw is stored', async (t) => {
      const log: string[] = [];
      for (let cycle = 0; cycle < CHAOS_CYCLES; cycle++) {
        const server = await startOn(site);
        const killAfterMs = randomInt(CHAOS_KILL_AFTER_MS[0], CHAOS_KILL_AFTER_MS[1]);
        const load = Promise.all(
          site.fleet.map(async (d) => {
            // A device that got no answer sends its last Join-request again half of the time (the NS retries it, or
            // the device repeats it), or moves on to a new DevNonce.
            if (d.unanswered !== undefined && randomInt(2) === 0) {
              const r = await send(site, server, d, d.unanswered.phy);
              if (r.kind === 'unanswered') return;
              if (r.kind === 'refused') {
                assert.equal(r.resultCode, 'JoinReqFailed', `${d.devEui}: a re-sent Join-request is accepted or refused as a replay`);
                assert.match(r.description, REPLAY);
              }
            }
            for (;;) {
              const r = await send(site, server, d, d.device.joinRequest());
              if (r.kind === 'unanswered') return;
              assert.equal(r.kind, 'accepted', `${d.devEui}: a new DevNonce is accepted, got ${JSON.stringify(r)}`);
            }
          }),
        );
        // The cut comes from outside, whatever the server is doing; the load loops end when their request is refused
        // a connection or loses it.
        const timer = setTimeout(() => {
          try {
            process.kill(server.pid, 'SIGKILL');
          } catch { /* already gone: the assertion below says how it ended */ }
        }, killAfterMs);
        try {
          await load;
        } finally {
          // On a failed assertion the server may still run: `cleanup` stops it.
          clearTimeout(timer);
        }
        assert.equal(await deathOf(server), 'SIGKILL');
        log.push(`${killAfterMs} ms`);
      }
      // After the last cut: a restart serves every device, each with a JoinNonce it never saw.
      const server = await startOn(site);
      await Promise.all(
        site.fleet.map(async (d) => {
          const r = await send(site, server, d, d.device.joinRequest());
          assert.equal(r.kind, 'accepted', `${d.devEui}: after the last restart a new DevNonce is accepted, got ${JSON.stringify(r)}`);
        }),
      );
      await server.stop();
      assertEveryAcceptStored(site, await storedSessions(site));
      const accepts = site.fleet.reduce((n, d) => n + d.accepts.length, 0);
      t.diagnostic(`${backend} chaos: ${accepts} accepts over ${CHAOS_CYCLES} cuts (after ${log.join(', ')} of load) and a final restart`);
    });
  });
}
