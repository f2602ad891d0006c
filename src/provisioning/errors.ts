export const provisioningErrorCodes = [
  'INVALID_INPUT',
  'DEVICE_EXISTS',
  'KEK_EXISTS',
  'KEK_NOT_FOUND',
  'CLEAR_KEY_REFUSED',
  'UNWRAP_FAILED',
  'KEK_NOT_TRUSTABLE',
  // Sealed batches (docs/specs/sealed-batch.md): the file, its signature, its maker; the maker tool's outputs; import.
  'BATCH_INVALID',
  'BATCH_TOO_LARGE',
  'BATCH_ALG_UNSUPPORTED',
  'BATCH_SIGNATURE_INVALID',
  'MAKER_UNKNOWN',
  'MAKER_MISMATCH',
  'OUTPUT_EXISTS',
  'BATCH_WRONG_RECIPIENT',
  'DERIVATION_KEY_UNKNOWN',
  'BATCH_CONFLICT',
  'BATCH_ALREADY_IMPORTED',
  'BATCH_ID_REUSED',
] as const;
export type ProvisioningErrorCode = (typeof provisioningErrorCodes)[number];

/** Refusals of administrative changes; messages say what to do and never contain key material. */
export class ProvisioningError extends Error {
  override readonly name = 'ProvisioningError';
  constructor(
    readonly code: ProvisioningErrorCode,
    message: string,
    /** Machine-readable particulars, e.g. the per-device report of a refused batch. */
    readonly details?: Readonly<Record<string, unknown>>,
  ) {
    super(message);
  }
}
