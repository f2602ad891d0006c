import { ProtocolError } from './errors.js';
import { type DevAddr, devAddrFromLeBytes, devAddrToLeBytes } from './dev-addr.js';
import { type Eui64, eui64ToLeBytes } from './eui64.js';
import { MHDR, expectMhdr } from './mhdr.js';
import { type NetId, netIdFromLeBytes, netIdToLeBytes } from './net-id.js';
import { assertUint16, assertUint24 } from './ranges.js';

export const CFLIST_LENGTH = 16;

export interface JoinAcceptFields {
  readonly joinNonce: number;
  /** Home NetID; TS002 puts the JoinReq SenderID here (spec-notes §1.11). */
  readonly netId: NetId;
  readonly devAddr: DevAddr;
  readonly dlSettings: number;
  /** RX1 delay in seconds, 0..15 (RxDelay byte bits 3..0). */
  readonly rxDelay: number;
  readonly cfList?: Uint8Array | undefined;
}

/**
 * The cleartext Join-accept before the MIC: MHDR | JoinNonce | NetID | DevAddr | DLSettings | RxDelay | [CFList]
 * (LoRaWAN 1.1 §6.2.3). 13 bytes, or 29 with a CFList.
 */
export function encodeJoinAcceptBody(f: JoinAcceptFields): Buffer {
  assertUint24(f.joinNonce, 'JoinNonce');
  if (!Number.isInteger(f.dlSettings) || f.dlSettings < 0 || f.dlSettings > 0xff) {
    throw new ProtocolError('OUT_OF_RANGE', 'DLSettings must be one byte', 'DLSettings');
  }
  if (!Number.isInteger(f.rxDelay) || f.rxDelay < 0 || f.rxDelay > 15) {
    throw new ProtocolError('OUT_OF_RANGE', 'RxDelay must be 0..15', 'RxDelay');
  }
  if (f.cfList !== undefined && f.cfList.length !== CFLIST_LENGTH) {
    throw new ProtocolError('INVALID_LENGTH', `CFList must be ${CFLIST_LENGTH} bytes, got ${f.cfList.length}`, 'CFList');
  }
  const b = Buffer.alloc(f.cfList ? 29 : 13);
  b[0] = MHDR.joinAccept;
  b.writeUIntLE(f.joinNonce, 1, 3);
  netIdToLeBytes(f.netId).copy(b, 4);
  devAddrToLeBytes(f.devAddr).copy(b, 7);
  b[11] = f.dlSettings;
  b[12] = f.rxDelay;
  if (f.cfList) Buffer.from(f.cfList).copy(b, 13);
  return b;
}

/** JoinReqType of the LoRaWAN 1.1 Join-accept MIC (1.1 §6.2.3): 0xFF for a Join-request, else the rejoin type. */
export const JOIN_REQ_TYPE = { joinRequest: 0xff, rejoin0: 0x00, rejoin1: 0x01, rejoin2: 0x02 } as const;
export type JoinReqType = (typeof JOIN_REQ_TYPE)[keyof typeof JOIN_REQ_TYPE];

/**
 * MIC input of a LoRaWAN 1.1 Join-accept sent with OptNeg=1 (MIC key JSIntKey):
 * JoinReqType | JoinEUI | DevNonce (or RJcount0/RJcount1 for rejoins) | body.
 */
export function joinAcceptMicInput11(
  ctx: { readonly joinReqType: JoinReqType; readonly joinEui: Eui64; readonly devNonce: number },
  body: Uint8Array,
): Buffer {
  assertUint16(ctx.devNonce, 'DevNonce');
  if (!(Object.values(JOIN_REQ_TYPE) as number[]).includes(ctx.joinReqType)) {
    throw new ProtocolError('OUT_OF_RANGE', 'JoinReqType must be 0xFF, 0x00, 0x01 or 0x02', 'JoinReqType');
  }
  const b = Buffer.alloc(11 + body.length);
  b[0] = ctx.joinReqType;
  eui64ToLeBytes(ctx.joinEui).copy(b, 1);
  b.writeUInt16LE(ctx.devNonce, 9);
  Buffer.from(body).copy(b, 11);
  return b;
}

/** 1.0.x devices, and 1.1 devices answered with OptNeg=0, MAC the body alone. */
export function joinAcceptMicInputLegacy(body: Uint8Array): Buffer {
  return Buffer.from(body);
}

/** What gets "encrypted" (AES-ECB decrypt, LoRaWAN 1.1 §6.2.3): everything after MHDR, plus the MIC. */
export function joinAcceptCipherInput(body: Uint8Array, mic: Uint8Array): Buffer {
  return Buffer.concat([body.subarray(1), mic]);
}

export function assembleJoinAccept(cipherText: Uint8Array): Buffer {
  return Buffer.concat([Buffer.of(MHDR.joinAccept), cipherText]);
}

export interface DecodedJoinAccept extends JoinAcceptFields {
  readonly body: Buffer;
  readonly mic: Buffer;
}

/** Decodes a decrypted Join-accept (MHDR | plaintext | MIC), as a device does after decrypting it. */
export function decodeJoinAcceptPlaintext(plain: Uint8Array): DecodedJoinAccept {
  if (plain.length !== 17 && plain.length !== 33) {
    throw new ProtocolError('INVALID_LENGTH', `Join-accept must be 17 or 33 bytes, got ${plain.length}`, 'PHYPayload');
  }
  expectMhdr(plain[0], MHDR.joinAccept, 'Join-accept');
  const b = Buffer.from(plain);
  const bodyEnd = b.length - 4;
  return {
    joinNonce: b.readUIntLE(1, 3),
    netId: netIdFromLeBytes(b.subarray(4, 7)),
    devAddr: devAddrFromLeBytes(b.subarray(7, 11)),
    dlSettings: b[11] ?? 0,
    rxDelay: (b[12] ?? 0) & 0x0f,
    cfList: b.length === 33 ? b.subarray(13, 29) : undefined,
    body: b.subarray(0, bodyEnd),
    mic: b.subarray(bodyEnd),
  };
}
