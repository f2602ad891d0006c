import { ProtocolError } from './errors.js';
import { type Eui64, eui64FromLeBytes, eui64ToLeBytes } from './eui64.js';
import { MHDR, expectMhdr } from './mhdr.js';
import { assertUint16 } from './ranges.js';

export const JOIN_REQUEST_LENGTH = 23;

/** A decoded Join-request (LoRaWAN 1.1 §6.2.2: MHDR | JoinEUI | DevEUI | DevNonce | MIC, all little-endian). */
export interface JoinRequest {
  readonly kind: 'join-request';
  readonly joinEui: Eui64;
  readonly devEui: Eui64;
  readonly devNonce: number;
  /** Bytes the MIC covers: MHDR through DevNonce (19 bytes). */
  readonly micInput: Buffer;
  readonly mic: Buffer;
}

export function decodeJoinRequest(phy: Uint8Array): JoinRequest {
  if (phy.length !== JOIN_REQUEST_LENGTH) {
    throw new ProtocolError('INVALID_LENGTH', `Join-request must be ${JOIN_REQUEST_LENGTH} bytes, got ${phy.length}`, 'PHYPayload');
  }
  expectMhdr(phy[0], MHDR.joinRequest, 'Join-request');
  const b = Buffer.from(phy);
  return {
    kind: 'join-request',
    joinEui: eui64FromLeBytes(b.subarray(1, 9)),
    devEui: eui64FromLeBytes(b.subarray(9, 17)),
    devNonce: b.readUInt16LE(17),
    micInput: b.subarray(0, 19),
    mic: b.subarray(19, 23),
  };
}

export interface JoinRequestFields {
  readonly joinEui: Eui64;
  readonly devEui: Eui64;
  readonly devNonce: number;
}

/** The 19 bytes a device MACs; append the 4-byte MIC to get the PHYPayload. */
export function encodeJoinRequestMicInput(fields: JoinRequestFields): Buffer {
  assertUint16(fields.devNonce, 'DevNonce');
  const b = Buffer.alloc(19);
  b[0] = MHDR.joinRequest;
  eui64ToLeBytes(fields.joinEui).copy(b, 1);
  eui64ToLeBytes(fields.devEui).copy(b, 9);
  b.writeUInt16LE(fields.devNonce, 17);
  return b;
}
