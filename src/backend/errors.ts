/** OVERLOADED: shed by admission control (src/backend/admission.ts) before any processing. */
export const backendErrorCodes = ['UNKNOWN_SENDER', 'UNSUPPORTED_MESSAGE_TYPE', 'MALFORMED_JSON', 'OVERLOADED'] as const;
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
