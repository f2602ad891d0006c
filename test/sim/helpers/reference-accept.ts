import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac } from '../../../src/custody/primitives.js';
import {
  type DevAddr,
  type Eui64,
  type JoinReqType,
  type NetId,
  assembleJoinAccept,
  encodeJoinAcceptBody,
  joinAcceptCipherInput,
  joinAcceptMicInput11,
  lifetimeKeyBlock,
} from '../../../src/protocol/index.js';

/**
 * Builds Join-accepts the way a Join Server does, with knobs to get them wrong on purpose
 * (wrong MIC formula, wrong key, stale JoinNonce), for the device simulator's drop tests.
 */
export interface AcceptSpec {
  readonly joinNonce: number;
  readonly netId: NetId;
  readonly devAddr: DevAddr;
  readonly dlSettings: number;
  readonly rxDelay: number;
  readonly cfList?: Buffer;
  /** 'legacy': MIC over the body with `micKey`; '1.1': JoinReqType | JoinEUI | nonce | body with `micKey`. */
  readonly micFormula: 'legacy' | '1.1';
  readonly micKey: Buffer;
  readonly encryptionKey: Buffer;
  readonly joinReqType?: JoinReqType;
  readonly joinEui?: Eui64;
  readonly nonce?: number;
}

export function buildAccept(s: AcceptSpec): Buffer {
  const body = encodeJoinAcceptBody(s);
  const micInput =
    s.micFormula === 'legacy'
      ? body
      : joinAcceptMicInput11({ joinReqType: s.joinReqType ?? 0xff, joinEui: s.joinEui!, devNonce: s.nonce ?? 0 }, body);
  const mic = aesCmac(s.micKey, micInput).subarray(0, 4);
  // LoRaWAN 1.1 §6.2.3: the network encrypts with AES *decrypt*.
  return assembleJoinAccept(aes128EcbDecrypt(s.encryptionKey, joinAcceptCipherInput(body, mic)));
}

export function lifetimeKey(nwkKey: Buffer, which: 'JSIntKey' | 'JSEncKey', devEui: Eui64): Buffer {
  return aes128EcbEncrypt(nwkKey, lifetimeKeyBlock(which, devEui));
}
