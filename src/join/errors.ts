/** Why the join engine refused a request. Each maps to one TS002 ResultCode in src/backend/result-codes.ts. */
export const joinErrorCodes = [
  'UNKNOWN_RECEIVER',
  'UNKNOWN_DEVICE',
  'UNKNOWN_SESSION',
  'ACTIVATION_DISALLOWED',
  'NO_ROAMING_AGREEMENT',
  'FRAME_MISMATCH',
  'MIC_FAILED',
  'DEV_NONCE_REPLAYED',
  'RJCOUNT1_REPLAYED',
  'JOIN_NONCE_EXHAUSTED',
  'MAC_VERSION_UNSUPPORTED',
  'REJOIN_NOT_SUPPORTED',
  'KEYS_UNDELIVERABLE',
] as const;
export type JoinErrorCode = (typeof joinErrorCodes)[number];

/** Messages go to the peer as Result.Description: identifiers and reasons only, never keys. */
export class JoinError extends Error {
  override readonly name = 'JoinError';
  constructor(
    readonly code: JoinErrorCode,
    message: string,
  ) {
    super(message);
  }
}
