import { randomBytes } from 'node:crypto';
import type { KeyCustody, KeyDestination } from '../src/custody/custody.js';
import { aesKeyWrap } from '../src/custody/primitives.js';
import {
  type DevAddr,
  type NetId,
  JOIN_REQ_TYPE,
  decodeJoinRequest,
  encodeJoinAcceptBody,
  joinAcceptMicInput11,
  legacySessionKeyBlock,
  lifetimeKeyBlock,
  lorawan11SessionKeyBlock,
} from '../src/protocol/index.js';
import type { SimulatedDevice } from '../sim/device.js';
import type { FloorResult } from './floor.js';
import { SampleBuffer } from './stats.js';

/*
 * A custody's throughput one join at a time through the KeyCustody interface (the calls the join engine makes:
 * verifyMic, then completeJoin), in a loop, no HTTP, no storage. For PKCS#11 each call is a worker round trip, so
 * this is not the crypto-only floor (floor-token.ts is): it shows what one join in flight costs through the pool.
 */

const NET_ID = '00BE0C' as NetId;
const DEV_ADDR = '01BE0C00' as DevAddr;

export async function measureCustodyFloor(custody: KeyCustody, fleet: readonly SimulatedDevice[], durationMs: number): Promise<FloorResult> {
  const importKek = randomBytes(16);
  const tag = randomBytes(4).toString('hex');
  const labels = { import: `floor-import-${tag}`, ns: `floor-ns-${tag}`, as: `floor-as-${tag}` };
  await custody.importKek(labels.import, Buffer.from(importKek));
  await custody.importKek(labels.ns, randomBytes(16));
  await custody.importKek(labels.as, randomBytes(16));
  const devices: { phy: Buffer; lorawan11: boolean; app: string; nwk: string | undefined }[] = [];
  for (const d of fleet.slice(0, 64)) {
    const { devEui, roots, macVersion } = d.identity;
    const app = `root/${devEui}/AppKey/floor${tag}`;
    await custody.importWrapped(app, 'root', aesKeyWrap(importKek, roots.appKey), labels.import);
    let nwk: string | undefined;
    if (roots.nwkKey) {
      nwk = `root/${devEui}/NwkKey/floor${tag}`;
      await custody.importWrapped(nwk, 'root', aesKeyWrap(importKek, roots.nwkKey), labels.import);
    }
    devices.push({ phy: d.joinRequest(), lorawan11: macVersion === '1.1', app, nwk });
  }
  const ns: KeyDestination = { kekLabel: labels.ns };
  const as: KeyDestination = { kekLabel: labels.as };
  let joinNonce = 1;
  const oneJoin = async (p: (typeof devices)[number]): Promise<void> => {
    const jr = decodeJoinRequest(p.phy);
    const root = p.lorawan11 ? p.nwk! : p.app;
    if (!(await custody.verifyMic({ handle: root }, jr.micInput, jr.mic))) throw new Error('floor: Join-request MIC did not verify');
    const n = joinNonce++;
    const body = encodeJoinAcceptBody({ joinNonce: n, netId: NET_ID, devAddr: DEV_ADDR, dlSettings: p.lorawan11 ? 0x83 : 0x03, rxDelay: 1 });
    if (!p.lorawan11) {
      const i = { joinNonce: n, netId: NET_ID, devNonce: jr.devNonce };
      await custody.completeJoin({ micKey: { handle: p.app }, micInput: body, encryptionKey: { handle: p.app }, body }, [
        { root: p.app, block: legacySessionKeyBlock('NwkSKey', i), to: ns },
        { root: p.app, block: legacySessionKeyBlock('AppSKey', i), to: as },
      ]);
      return;
    }
    const micInput = joinAcceptMicInput11({ joinReqType: JOIN_REQ_TYPE.joinRequest, joinEui: jr.joinEui, devNonce: jr.devNonce }, body);
    const i = { joinNonce: n, joinEui: jr.joinEui, devNonce: jr.devNonce };
    await custody.completeJoin({ micKey: { handle: p.nwk!, derive: lifetimeKeyBlock('JSIntKey', jr.devEui) }, micInput, encryptionKey: { handle: p.nwk! }, body }, [
      ...(['FNwkSIntKey', 'SNwkSIntKey', 'NwkSEncKey'] as const).map((k) => ({ root: p.nwk!, block: lorawan11SessionKeyBlock(k, i), to: ns })),
      { root: p.app, block: lorawan11SessionKeyBlock('AppSKey', i), to: as },
    ]);
  };
  for (let w = 0; w < 200; w++) await oneJoin(devices[w % devices.length]!);
  const samples = new SampleBuffer();
  const start = performance.now();
  const end = start + durationMs;
  let k = 0;
  while (performance.now() < end) {
    const t0 = process.hrtime.bigint();
    await oneJoin(devices[k++ % devices.length]!);
    samples.push(Number(process.hrtime.bigint() - t0));
  }
  return { joins: samples.length, seconds: (performance.now() - start) / 1000, latenciesNs: Float64Array.from(samples.values()) };
}
