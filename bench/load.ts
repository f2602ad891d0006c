import http from 'node:http';
import { devAddrFromLeBytes } from '../src/protocol/index.js';
import type { SimulatedDevice } from '../sim/device.js';
import { type NetworkServerClient } from '../sim/network-server.js';
import { IdlePool } from './fleet.js';
import { SampleBuffer } from './stats.js';

/*
 * Closed-loop load at saturation: `concurrency` workers, each sending one JoinReq at a time over a pool of
 * keep-alive connections, every join from an idle device with a fresh DevNonce. Latency is the NS client's:
 * request serialisation, HTTP round trip, answer parsing and unwrapping of the NS keys.
 */

export interface LoadOptions {
  readonly concurrency: number;
  readonly durationMs: number;
  readonly warmupMs: number;
  /** Check every n-th accept as the device would (decrypt, MIC, JoinNonce rule, keys = NS keys); 0 = never. */
  readonly verifyEvery: number;
}

export interface LoadResult {
  readonly joins: number;
  readonly seconds: number;
  readonly latenciesNs: Float64Array;
  readonly errors: ReadonlyMap<string, number>;
  readonly verified: number;
}

export function keepAliveAgent(concurrency: number): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
}

export async function driveLoad(fleet: readonly SimulatedDevice[], ns: NetworkServerClient, o: LoadOptions): Promise<LoadResult> {
  const pool = new IdlePool(fleet);
  const latencies = new SampleBuffer();
  const errors = new Map<string, number>();
  const fail = (what: string): void => void errors.set(what, (errors.get(what) ?? 0) + 1);
  let joins = 0;
  let verified = 0;
  let seq = 0;
  const start = performance.now();
  const measureFrom = start + o.warmupMs;
  const end = measureFrom + o.durationMs;

  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const device = pool.take();
      if (device === undefined) throw new RangeError('more workers than devices: lower --concurrency or raise --devices');
      try {
        const phyPayload = device.joinRequest();
        const macVersion = device.identity.macVersion;
        const t0 = process.hrtime.bigint();
        const ans = await ns.joinReq({
          phyPayload, devEui: device.identity.devEui, joinEui: device.identity.joinEui, macVersion,
          devAddr: devAddrFromLeBytes(Buffer.of(seq & 0xff, (seq >> 8) & 0xff, (seq >> 16) & 0xff, 0x01)),
          dlSettings: macVersion === '1.1' ? 0x83 : 0x03, rxDelay: 1,
        });
        const t1 = process.hrtime.bigint();
        seq++;
        const measured = performance.now() >= measureFrom && performance.now() < end;
        if (!ans.ok) {
          if (measured) fail(ans.kind === 'result' ? `Result ${ans.resultCode}${ans.description ? `: ${ans.description}` : ''}` : `${ans.kind}: ${ans.detail}`);
          continue;
        }
        if (measured) {
          joins++;
          latencies.push(Number(t1 - t0));
        }
        if (o.verifyEvery > 0 && seq % o.verifyEvery === 0) {
          const r = device.receiveJoinAccept(ans.phyPayload);
          verified++;
          if (!r.accepted) fail(`device dropped the accept: ${r.reason}`);
          else {
            const nsKey = ans.nsKeys.scheme === 'legacy' ? ans.nsKeys.nwkSKey : ans.nsKeys.fNwkSIntKey;
            const devKey = r.keys.scheme === 'legacy' ? r.keys.nwkSKey : r.keys.fNwkSIntKey;
            if (!nsKey.equals(devKey)) fail('NS key differs from the device key');
          }
        }
      } catch (e) {
        fail(`exception: ${(e as Error).message}`);
      } finally {
        pool.give(device);
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  return { joins, seconds: o.durationMs / 1000, latenciesNs: Float64Array.from(latencies.values()), errors, verified };
}

/**
 * The same closed loop for the HTTP floors (bench/floor-server.ts): `concurrency` workers POST a JoinReq-sized JSON
 * body over the same kind of keep-alive pool and count answers with status 200.
 */
export async function drivePosts(url: string, body: (seq: number) => string, agent: http.Agent, o: Omit<LoadOptions, 'verifyEvery'>): Promise<LoadResult> {
  const latencies = new SampleBuffer();
  const errors = new Map<string, number>();
  let joins = 0;
  let seq = 0;
  const start = performance.now();
  const measureFrom = start + o.warmupMs;
  const end = measureFrom + o.durationMs;
  const target = new URL(url);
  const post = (payload: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
        (res) => {
          res.on('data', () => undefined);
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const t0 = process.hrtime.bigint();
      let status: number;
      try {
        status = await post(body(seq++));
      } catch (e) {
        errors.set(`exception: ${(e as Error).message}`, (errors.get(`exception: ${(e as Error).message}`) ?? 0) + 1);
        continue;
      }
      const t1 = process.hrtime.bigint();
      const now = performance.now();
      if (now < measureFrom || now >= end) continue;
      if (status !== 200) errors.set(`HTTP ${status}`, (errors.get(`HTTP ${status}`) ?? 0) + 1);
      else {
        joins++;
        latencies.push(Number(t1 - t0));
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  return { joins, seconds: o.durationMs / 1000, latenciesNs: Float64Array.from(latencies.values()), errors, verified: 0 };
}
