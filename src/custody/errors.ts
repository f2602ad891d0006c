export const custodyErrorCodes = [
  'KEY_NOT_FOUND',
  'KEY_EXISTS',
  'KEK_NOT_FOUND',
  'UNWRAP_FAILED',
  'INVALID_KEY',
  'CLEAR_EXPORT_REFUSED',
  'MASTER_KEY_INVALID',
  'SEALED_RECORD_CORRUPT',
  /** PKCS#11: the module cannot be loaded, the token label is not present, or the PIN is refused. */
  'TOKEN_UNAVAILABLE',
  /** PKCS#11: the token refused an operation for a reason other than the key or its envelope (the CKR_ name is in the message). */
  'TOKEN_ERROR',
  /** PKCS#11: every worker is busy and the queue is full; the operation was refused at once, not queued (the HSM is saturated). */
  'OVERLOADED',
  /**
   * PKCS#11 trusted-KEK mode: the KEK is not trusted (CKA_TRUSTED=false), so the token will not wrap a session key
   * under it; or a KEK was to enter in a way that cannot make it trusted (unwrapped, or created by the user).
   */
  'KEK_NOT_TRUSTED',
  /**
   * The custody cannot run the mechanism the request needs, e.g. a PKCS#11 token that cannot C_UnwrapKey with
   * RSA-OAEP and SHA-256 (SoftHSM2 2.6.1): the message names the alternative (RSA-OAEP with SHA-1).
   */
  'MECHANISM_UNSUPPORTED',
  /** Root keys may not leave this custody (PKCS#11: root keys are not extractable), not even sealed to another Join Server. */
  'EXPORT_REFUSED',
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
