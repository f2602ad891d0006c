export const backendErrorCodes = ['UNKNOWN_SENDER', 'UNSUPPORTED_MESSAGE_TYPE', 'MALFORMED_JSON'] as const;
export type BackendErrorCode = (typeof backendErrorCodes)[number];

export class BackendError extends Error {
  override readonly name = 'BackendError';
  constructor(
    readonly code: BackendErrorCode,
    message: string,
  ) {
    super(message);
  }
}
