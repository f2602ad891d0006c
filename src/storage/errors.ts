export const storageErrorCodes = [
  'DEVICE_EXISTS',
  'DEVICE_NOT_FOUND',
  'PEER_EXISTS',
  'MAKER_EXISTS',
  'BATCH_EXISTS',
  'KEY_RECORD_EXISTS',
  'ORGANISATION_EXISTS',
  'API_KEY_EXISTS',
  /** A commissioning change named a device that is not (or no longer) the caller's: nothing changed. */
  'NOT_OWNED',
  /** An ownership transfer that is not (or no longer) offered. */
  'TRANSFER_NOT_OFFERED',
  'SCHEMA_TOO_NEW',
  'UNAVAILABLE',
] as const;
export type StorageErrorCode = (typeof storageErrorCodes)[number];

export class StorageError extends Error {
  override readonly name = 'StorageError';
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
