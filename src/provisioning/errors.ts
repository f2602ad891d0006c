export const provisioningErrorCodes = ['INVALID_INPUT', 'DEVICE_EXISTS', 'KEK_EXISTS', 'KEK_NOT_FOUND', 'CLEAR_KEY_REFUSED', 'UNWRAP_FAILED', 'KEK_NOT_TRUSTABLE'] as const;
export type ProvisioningErrorCode = (typeof provisioningErrorCodes)[number];

/** Refusals of administrative changes; messages say what to do and never contain key material. */
export class ProvisioningError extends Error {
  override readonly name = 'ProvisioningError';
  constructor(
    readonly code: ProvisioningErrorCode,
    message: string,
  ) {
    super(message);
  }
}
