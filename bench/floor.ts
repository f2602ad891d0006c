import { type KeyObject, createSecretKey } from 'node:crypto';
import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac, aesKeyWrap, micEquals } from '../src/custody/primitives.js';
import {
  type DevAddr,
  type NetId,
  JOIN_REQ_TYPE,
  assembleJoinAccept,
  decodeJoinRequest,
  encodeJoinAcceptBody,
  joinAcceptCipherInput,
  joinAcceptMicInput11,
  legacySessionKeyBlock,
  lifetimeKeyBlock,
  lorawan11SessionKeyBlock,
} from '../src/protocol/index.js';
import type { SimulatedDevice } from '../sim/device.js';
import { SampleBuffer } from './stats.js';

/*
 * The floor: only the cryptography a Join Server must do per join, in a loop on one core — no HTTP, no JSON,
 * no storage, no custody indirection. Device-side work (building the request, checking the accept) is done
 * before the loop. Per join: parse the frame, verify its MIC, build and MIC the accept, encrypt it, derive
 * the session keys and wrap each under its KEK (1.0.x: 2 keys; 1.1: 4 keys plus JSIntKey).
 */

export interface FloorResult {
  readonly joins: number;
  readonly seconds: number;
  readonly latenciesNs: Float64Array;
}

interface Prepared {
  readonly phy: Buffer;
  readonly lorawan11: boolean;
  readonly appKey: KeyObject;
  readonly nwkKey: KeyObject | undefined;
}

const NET_ID = '00BE0C' as NetId;
const DEV_ADDR = '01BE0C00' as DevAddr;

export function measureFloor(fleet: readonly SimulatedDevice[], durationMs: number, nsKekBytes: Buffer, asKekBytes: Buffer): FloorResult {
  // Device side, outside the measurement: fresh Join-requests from (up to) 512 devices.
  const prepared: Prepared[] = fleet.slice(0, 512).map((d) => ({
    phy: d.joinRequest(),
    lorawan11: d.identity.macVersion === '1.1',
    // KeyObjects, as the software keystore holds opened keys (OpenSSL memory, cached by handle).
    appKey: createSecretKey(d.identity.roots.appKey),
    nwkKey: d.identity.roots.nwkKey && createSecretKey(d.identity.roots.nwkKey),
  }));
  const nsKek = createSecretKey(nsKekBytes);
  const asKek = createSecretKey(asKekBytes);
  let joinNonce = 1;
  // Warm-up (JIT, OpenSSL contexts), not measured.
  for (let w = 0; w < 2000; w++) serverJoinCrypto(prepared[w % prepared.length]!, joinNonce++, nsKek, asKek);
  const samples = new SampleBuffer();
  const start = performance.now();
  const end = start + durationMs;
  let i = 0;
  while (performance.now() < end) {
    const p = prepared[i++ % prepared.length]!;
    const t0 = process.hrtime.bigint();
    const ok = serverJoinCrypto(p, joinNonce++, nsKek, asKek);
    samples.push(Number(process.hrtime.bigint() - t0));
    if (!ok) throw new Error('floor: Join-request MIC did not verify');
    if (joinNonce > 0xffffff) joinNonce = 1;
  }
  return { joins: samples.length, seconds: (performance.now() - start) / 1000, latenciesNs: Float64Array.from(samples.values()) };
}

function serverJoinCrypto(p: Prepared, joinNonce: number, nsKek: KeyObject, asKek: KeyObject): boolean {
  const jr = decodeJoinRequest(p.phy);
  const rootForMic = p.lorawan11 ? p.nwkKey! : p.appKey;
  if (!micEquals(aesCmac(rootForMic, jr.micInput), jr.mic)) return false;
  const body = encodeJoinAcceptBody({ joinNonce, netId: NET_ID, devAddr: DEV_ADDR, dlSettings: p.lorawan11 ? 0x83 : 0x03, rxDelay: 1 });
  if (!p.lorawan11) {
    const mic = aesCmac(p.appKey, body).subarray(0, 4);
    assembleJoinAccept(aes128EcbDecrypt(p.appKey, joinAcceptCipherInput(body, mic)));
    const i = { joinNonce, netId: NET_ID, devNonce: jr.devNonce };
    aesKeyWrap(nsKek, aes128EcbEncrypt(p.appKey, legacySessionKeyBlock('NwkSKey', i)));
    aesKeyWrap(asKek, aes128EcbEncrypt(p.appKey, legacySessionKeyBlock('AppSKey', i)));
    return true;
  }
  const nwkKey = p.nwkKey!;
  const jsIntKey = aes128EcbEncrypt(nwkKey, lifetimeKeyBlock('JSIntKey', jr.devEui));
  const mic = aesCmac(jsIntKey, joinAcceptMicInput11({ joinReqType: JOIN_REQ_TYPE.joinRequest, joinEui: jr.joinEui, devNonce: jr.devNonce }, body)).subarray(0, 4);
  assembleJoinAccept(aes128EcbDecrypt(nwkKey, joinAcceptCipherInput(body, mic)));
  const i = { joinNonce, joinEui: jr.joinEui, devNonce: jr.devNonce };
  for (const k of ['FNwkSIntKey', 'SNwkSIntKey', 'NwkSEncKey'] as const) aesKeyWrap(nsKek, aes128EcbEncrypt(nwkKey, lorawan11SessionKeyBlock(k, i)));
  aesKeyWrap(asKek, aes128EcbEncrypt(p.appKey, lorawan11SessionKeyBlock('AppSKey', i)));
  return true;
}
