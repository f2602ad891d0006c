/** Closed set of codes for malformed LoRaWAN frames and TS002 fields. */
export const protocolErrorCodes = [
  'INVALID_HEX',
  'INVALID_LENGTH',
  'INVALID_MTYPE',
  'INVALID_MAJOR',
  'INVALID_REJOIN_TYPE',
  'INVALID_MAC_VERSION',
  'INVALID_FIELD',
  'MISSING_FIELD',
  'OUT_OF_RANGE',
  'INVALID_PROTOCOL_VERSION',
  'JOIN_NONCE_EXHAUSTED',
] as const;
export type ProtocolErrorCode = (typeof protocolErrorCodes)[number];

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
    /** The TS002 / frame field the error is about, when there is one. */
    readonly field?: string,
  ) {
    super(message);
  }
}
