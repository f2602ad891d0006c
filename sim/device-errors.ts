/** Why the simulated device refuses to send a frame (closed set, STYLE rule 6). */
export const deviceErrorCodes = [
  'MISSING_NWK_KEY',
  'UNEXPECTED_NWK_KEY',
  'REJOIN_NEEDS_LORAWAN_11',
  'REJOIN_NEEDS_SESSION',
  'REJOIN_NEEDS_LORAWAN_11_SESSION',
  'DEV_NONCE_EXHAUSTED',
  'RJCOUNT_EXHAUSTED',
] as const;
export type DeviceErrorCode = (typeof deviceErrorCodes)[number];

export class DeviceError extends Error {
  override readonly name = 'DeviceError';
  constructor(readonly code: DeviceErrorCode, message: string) {
    super(message);
  }
}
