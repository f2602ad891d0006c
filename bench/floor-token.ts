import { randomBytes } from 'node:crypto';
import { type KeyDestination, kekHandle } from '../src/custody/custody.js';
import { type Pkcs11Counters, diffCounters, readCounters } from '../src/custody/pkcs11/counters.js';
import { type OpKey, runOperation } from '../src/custody/pkcs11/operations.js';
import type { TokenSession } from '../src/custody/pkcs11/token-session.js';
import { aesKeyWrap } from '../src/custody/primitives.js';
import { sessionKeyRequests } from '../src/join/steps.js';
import type { SessionPlan } from '../src/join/session-plan.js';
import {
  type DevAddr,
  type Eui64,
  type NetId,
  JOIN_REQ_TYPE,
  assembleJoinAccept,
  decodeJoinRequest,
  encodeJoinAcceptBody,
  joinAcceptMicInput11,
  joinAcceptMicInputLegacy,
  lifetimeKeyBlock,
} from '../src/protocol/index.js';
import type { SimulatedDevice } from '../sim/device.js';
import type { FloorResult } from './floor.js';
import { SampleBuffer } from './stats.js';

/*
 * The SoftHSM2 crypto-only floor: a join's key operations run synchronously, in this thread, on one TokenSession —
 * no worker thread, no HTTP, no storage, one core. Each join runs the very operations a PKCS#11 worker runs for the
 * server (operations.ts runOperation: verifyMic, then completeJoin with the session-key requests built by the join
 * engine's sessionKeyRequests). Open the session with `workingCopies: false` to measure the previous design in the
 * same run: operations on the token objects themselves, JSIntKey derived and destroyed on every use.
 */

const NET_ID = '00BE0C' as NetId;
const DEV_ADDR = '01BE0C00' as DevAddr;

export interface TokenFloorResult extends FloorResult {
  /** PKCS#11 calls and objects over the measured loop (a 1.0.x / 1.1 mix as the fleet's). */
  readonly counters: Pkcs11Counters;
  /** One 1.0.x join and one 1.1 join, after warm-up, counted exactly. */
  readonly legacyJoin: Pkcs11Counters;
  readonly lorawan11Join: Pkcs11Counters;
}

interface Device {
  readonly phy: Buffer;
  readonly devEui: Eui64;
  readonly plan: SessionPlan;
}

export function measureTokenFloor(token: TokenSession, fleet: readonly SimulatedDevice[], durationMs: number): TokenFloorResult {
  const tag = randomBytes(4).toString('hex');
  const importKek = randomBytes(16);
  const labels = { import: `tfloor-import-${tag}`, ns: `tfloor-ns-${tag}`, as: `tfloor-as-${tag}` };
  const now = new Date();
  token.createKek(kekHandle(labels.import), importKek, now);
  token.createKek(kekHandle(labels.ns), randomBytes(16), now);
  token.createKek(kekHandle(labels.as), randomBytes(16), now);
  const devices: Device[] = fleet.slice(0, 64).map((d) => {
    const { devEui, roots, macVersion } = d.identity;
    const app = `root/${devEui}/AppKey/tfloor${tag}`;
    token.unwrapInto(app, 'root', aesKeyWrap(importKek, roots.appKey), labels.import, kekHandle(labels.import), now);
    if (macVersion !== '1.1' || !roots.nwkKey) return { phy: d.joinRequest(), devEui, plan: { scheme: 'legacy', nwkRoot: app, appRoot: app } };
    const nwk = `root/${devEui}/NwkKey/tfloor${tag}`;
    token.unwrapInto(nwk, 'root', aesKeyWrap(importKek, roots.nwkKey), labels.import, kekHandle(labels.import), now);
    return { phy: d.joinRequest(), devEui, plan: { scheme: 'lorawan11', nwkRoot: nwk, appRoot: app } };
  });
  const to: { networkServer: KeyDestination; applicationServer: KeyDestination } = { networkServer: { kekLabel: labels.ns }, applicationServer: { kekLabel: labels.as } };

  const opKey = (handle: string, derive: Uint8Array | undefined): OpKey => ({ handle, derive });

  let joinNonce = 1;
  const oneJoin = (d: Device): void => {
    const jr = decodeJoinRequest(d.phy);
    const { plan } = d;
    const lorawan11 = plan.scheme === 'lorawan11';
    if (runOperation(token, { op: 'verifyMic', args: { ...opKey(plan.nwkRoot, undefined), message: jr.micInput, mic: jr.mic } }) !== true) {
      throw new Error('token floor: Join-request MIC did not verify');
    }
    const n = joinNonce++;
    const body = encodeJoinAcceptBody({ joinNonce: n, netId: NET_ID, devAddr: DEV_ADDR, dlSettings: lorawan11 ? 0x83 : 0x03, rxDelay: 1 });
    const micInput = lorawan11 ? joinAcceptMicInput11({ joinReqType: JOIN_REQ_TYPE.joinRequest, joinEui: jr.joinEui, devNonce: jr.devNonce }, body) : joinAcceptMicInputLegacy(body);
    const session = { sessionKeyId: '00', devEui: jr.devEui, joinEui: jr.joinEui, scheme: plan.scheme, joinNonce: n, devNonce: jr.devNonce, netId: NET_ID, devAddr: DEV_ADDR, createdAt: now };
    const done = runOperation(token, {
      op: 'completeJoin',
      args: {
        micKey: opKey(plan.nwkRoot, lorawan11 ? lifetimeKeyBlock('JSIntKey', d.devEui) : undefined),
        micInput,
        encryptionKey: opKey(plan.nwkRoot, undefined),
        body,
        keys: sessionKeyRequests(plan, session, to),
      },
    }) as { encrypted: Uint8Array };
    assembleJoinAccept(done.encrypted);
    if (joinNonce > 0xffffff) joinNonce = 1;
  };

  for (let w = 0; w < 500; w++) oneJoin(devices[w % devices.length]!);
  const countOne = (lorawan11: boolean): Pkcs11Counters => {
    const d = devices.find((x) => (x.plan.scheme === 'lorawan11') === lorawan11);
    const before = readCounters([token.counters]);
    if (d !== undefined) oneJoin(d);
    return diffCounters(readCounters([token.counters]), before);
  };
  const legacyJoin = countOne(false);
  const lorawan11Join = countOne(true);

  const before = readCounters([token.counters]);
  const samples = new SampleBuffer();
  const start = performance.now();
  const end = start + durationMs;
  let k = 0;
  while (performance.now() < end) {
    const t0 = process.hrtime.bigint();
    oneJoin(devices[k++ % devices.length]!);
    samples.push(Number(process.hrtime.bigint() - t0));
  }
  const seconds = (performance.now() - start) / 1000;
  return { joins: samples.length, seconds, latenciesNs: Float64Array.from(samples.values()), counters: diffCounters(readCounters([token.counters]), before), legacyJoin, lorawan11Join };
}
