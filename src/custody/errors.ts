export const custodyErrorCodes = [
  'KEY_NOT_FOUND',
  'KEY_EXISTS',
  'KEK_NOT_FOUND',
  'UNWRAP_FAILED',
  'INVALID_KEY',
  'CLEAR_EXPORT_REFUSED',
  'MASTER_KEY_INVALID',
  'SEALED_RECORD_CORRUPT',
] as const;
export type CustodyErrorCode = (typeof custodyErrorCodes)[number];

/** Custody errors name handles and labels, never key material. */
export class CustodyError extends Error {
  override readonly name = 'CustodyError';
  constructor(
    readonly code: CustodyErrorCode,
    message: string,
  ) {
    super(message);
  }
}
