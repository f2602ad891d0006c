export const commissioningErrorCodes = [
  'INVALID_INPUT',
  'PEER_EXISTS',
  'KEK_NOT_FOUND',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  /** Any failed claim, whatever the reason: it must not reveal whether the device exists. */
  'CLAIM_FAILED',
  /** Unknown, or not visible to the caller: the two are answered alike. */
  'NOT_FOUND',
  'CONFLICT',
  'RATE_LIMITED',
] as const;
export type CommissioningErrorCode = (typeof commissioningErrorCodes)[number];

export class CommissioningError extends Error {
  override readonly name = 'CommissioningError';
  constructor(
    readonly code: CommissioningErrorCode,
    message: string,
    /** For RATE_LIMITED: seconds until the caller may try again. */
    readonly retryAfterS?: number,
  ) {
    super(message);
  }
}
