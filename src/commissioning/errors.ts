export const commissioningErrorCodes = ['INVALID_INPUT', 'PEER_EXISTS', 'KEK_NOT_FOUND', 'CONFLICT'] as const;
export type CommissioningErrorCode = (typeof commissioningErrorCodes)[number];

export class CommissioningError extends Error {
  override readonly name = 'CommissioningError';
  constructor(
    readonly code: CommissioningErrorCode,
    message: string,
  ) {
    super(message);
  }
}
