import { ProtocolError } from './errors.js';
import { type Eui64, eui64FromLeBytes, eui64ToLeBytes } from './eui64.js';
import { MHDR, expectMhdr } from './mhdr.js';
import { type NetId, netIdFromLeBytes, netIdToLeBytes } from './net-id.js';
import { assertUint16 } from './ranges.js';

/** Rejoin-request type 0 or 2 (LoRaWAN 1.1 §6.2.4.1): MHDR | type | NetID | DevEUI | RJcount0 | MIC(SNwkSIntKey). */
export interface RejoinRequest02 {
  readonly kind: 'rejoin-request';
  readonly rejoinType: 0 | 2;
  readonly netId: NetId;
  readonly devEui: Eui64;
  readonly rjCount0: number;
  readonly micInput: Buffer;
  readonly mic: Buffer;
}

/** Rejoin-request type 1 (LoRaWAN 1.1 §6.2.4.2): MHDR | type | JoinEUI | DevEUI | RJcount1 | MIC(JSIntKey). */
export interface RejoinRequest1 {
  readonly kind: 'rejoin-request';
  readonly rejoinType: 1;
  readonly joinEui: Eui64;
  readonly devEui: Eui64;
  readonly rjCount1: number;
  readonly micInput: Buffer;
  readonly mic: Buffer;
}

export type RejoinRequest = RejoinRequest02 | RejoinRequest1;

export const REJOIN_02_LENGTH = 19;
export const REJOIN_1_LENGTH = 24;

export function decodeRejoinRequest(phy: Uint8Array): RejoinRequest {
  expectMhdr(phy[0], MHDR.rejoinRequest, 'Rejoin-request');
  const b = Buffer.from(phy);
  const rejoinType = b[1];
  if (rejoinType === 0 || rejoinType === 2) {
    expectLength(b, REJOIN_02_LENGTH, rejoinType);
    return {
      kind: 'rejoin-request',
      rejoinType,
      netId: netIdFromLeBytes(b.subarray(2, 5)),
      devEui: eui64FromLeBytes(b.subarray(5, 13)),
      rjCount0: b.readUInt16LE(13),
      micInput: b.subarray(0, 15),
      mic: b.subarray(15, 19),
    };
  }
  if (rejoinType === 1) {
    expectLength(b, REJOIN_1_LENGTH, rejoinType);
    return {
      kind: 'rejoin-request',
      rejoinType,
      joinEui: eui64FromLeBytes(b.subarray(2, 10)),
      devEui: eui64FromLeBytes(b.subarray(10, 18)),
      rjCount1: b.readUInt16LE(18),
      micInput: b.subarray(0, 20),
      mic: b.subarray(20, 24),
    };
  }
  throw new ProtocolError('INVALID_REJOIN_TYPE', `Rejoin-request type ${rejoinType ?? 'missing'} is not 0, 1 or 2`, 'PHYPayload');
}

function expectLength(b: Buffer, length: number, type: number): void {
  if (b.length !== length) {
    throw new ProtocolError('INVALID_LENGTH', `Rejoin-request type ${type} must be ${length} bytes, got ${b.length}`, 'PHYPayload');
  }
}

export type RejoinRequestFields =
  | { readonly rejoinType: 0 | 2; readonly netId: NetId; readonly devEui: Eui64; readonly rjCount0: number }
  | { readonly rejoinType: 1; readonly joinEui: Eui64; readonly devEui: Eui64; readonly rjCount1: number };

/** The bytes a device MACs (15 for types 0/2, 20 for type 1); append the MIC to get the PHYPayload. */
export function encodeRejoinRequestMicInput(fields: RejoinRequestFields): Buffer {
  if (fields.rejoinType === 1) {
    assertUint16(fields.rjCount1, 'RJcount1');
    const b = Buffer.alloc(20);
    b[0] = MHDR.rejoinRequest;
    b[1] = 1;
    eui64ToLeBytes(fields.joinEui).copy(b, 2);
    eui64ToLeBytes(fields.devEui).copy(b, 10);
    b.writeUInt16LE(fields.rjCount1, 18);
    return b;
  }
  assertUint16(fields.rjCount0, 'RJcount0');
  const b = Buffer.alloc(15);
  b[0] = MHDR.rejoinRequest;
  b[1] = fields.rejoinType;
  netIdToLeBytes(fields.netId).copy(b, 2);
  eui64ToLeBytes(fields.devEui).copy(b, 5);
  b.writeUInt16LE(fields.rjCount0, 13);
  return b;
}
