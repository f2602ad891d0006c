import { JoinError, type JoinErrorCode } from '../join/errors.js';
import { ProtocolError, type ProtocolErrorCode, type ResultCode } from '../protocol/index.js';
import { BackendError, type BackendErrorCode } from './errors.js';
import { CustodyError } from '../custody/errors.js';

/*
 * The one place where errors become TS002 result codes (STYLE rule 6). Consensus of The Things Stack,
 * ChirpStack and brocaar (spec-notes §2.6): malformed → MalformedRequest/MalformedMessage, unknown device →
 * UnknownDevEUI, bad MIC → MICFailed, wrong network → ActivationDisallowed, replays and exhausted counters →
 * JoinReqFailed, authentication → UnknownSender, JoinEUI not ours → UnkownReceiver, anything else → Other.
 * A test checks that every code is mapped and documented in docs/api/backend-interfaces.md.
 */

export const joinErrorResults: Readonly<Record<JoinErrorCode, ResultCode>> = {
  UNKNOWN_RECEIVER: 'UnknownReceiver',
  UNKNOWN_DEVICE: 'UnknownDevEUI',
  UNKNOWN_SESSION: 'UnknownDevEUI',
  ACTIVATION_DISALLOWED: 'ActivationDisallowed',
  NO_ROAMING_AGREEMENT: 'NoRoamingAgreement',
  FRAME_MISMATCH: 'MalformedRequest',
  MIC_FAILED: 'MICFailed',
  DEV_NONCE_REPLAYED: 'JoinReqFailed',
  RJCOUNT1_REPLAYED: 'JoinReqFailed',
  JOIN_NONCE_EXHAUSTED: 'JoinReqFailed',
  MAC_VERSION_UNSUPPORTED: 'JoinReqFailed',
  REJOIN_NOT_SUPPORTED: 'JoinReqFailed',
  KEYS_UNDELIVERABLE: 'JoinReqFailed',
};

export const protocolErrorResults: Readonly<Record<ProtocolErrorCode, ResultCode>> = {
  INVALID_HEX: 'MalformedRequest',
  INVALID_LENGTH: 'MalformedRequest',
  INVALID_MTYPE: 'MalformedRequest',
  INVALID_MAJOR: 'MalformedRequest',
  INVALID_REJOIN_TYPE: 'MalformedRequest',
  INVALID_MAC_VERSION: 'MalformedRequest',
  INVALID_FIELD: 'MalformedRequest',
  MISSING_FIELD: 'MalformedRequest',
  OUT_OF_RANGE: 'MalformedRequest',
  INVALID_PROTOCOL_VERSION: 'InvalidProtocolVersion',
  JOIN_NONCE_EXHAUSTED: 'JoinReqFailed',
};

export const backendErrorResults: Readonly<Record<BackendErrorCode, ResultCode>> = {
  UNKNOWN_SENDER: 'UnknownSender',
  UNSUPPORTED_MESSAGE_TYPE: 'MalformedRequest',
  MALFORMED_JSON: 'MalformedRequest',
  // Shed by admission control. TS002-1.0 Table 24 has no busy code (spec-notes §2.6): `JoinReqFailed` would say the
  // JS processed this Join-request and refused it (network servers log it as the device's failure), `Deferred` is
  // passive roaming's "not for a period of time"; `Other` ("error cases not standardized yet") with a plain
  // description is the honest answer, and the same one the HSM queue's overload gives.
  OVERLOADED: 'Other',
};

export interface ResultFor {
  readonly resultCode: ResultCode;
  readonly description: string;
  /** True for failures of ours (storage, custody), which are logged as errors rather than refusals. */
  readonly internal: boolean;
}

export function resultFor(error: unknown): ResultFor {
  if (error instanceof JoinError) return { resultCode: joinErrorResults[error.code], description: error.message, internal: false };
  if (error instanceof BackendError) return { resultCode: backendErrorResults[error.code], description: error.message, internal: false };
  if (error instanceof ProtocolError) {
    // TS002 FrameSizeError: "wrong size of PHYPayload".
    const frameSize = error.code === 'INVALID_LENGTH' && error.field === 'PHYPayload';
    return { resultCode: frameSize ? 'FrameSizeError' : protocolErrorResults[error.code], description: error.message, internal: false };
  }
  // Load shedding: the HSM's queue is full. TS002 has no busy code; Other with a plain reason tells the network
  // server to retry later instead of waiting for a timeout.
  if (error instanceof CustodyError && error.code === 'OVERLOADED') {
    return { resultCode: 'Other', description: 'the Join Server is overloaded (HSM queue full); retry later', internal: false };
  }
  // Our own failure: the peer learns only that processing failed; details go to our log.
  return { resultCode: 'Other', description: 'the Join Server could not process the request; see its log', internal: true };
}
