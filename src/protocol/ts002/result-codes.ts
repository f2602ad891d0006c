/**
 * TS002 result codes, canonical internal names (TS002-1.0 Table 24 plus the 1.1 additions).
 * The wire spelling depends on the request's ProtocolVersion: see resultCodeText.
 */
export const resultCodes = [
  'Success',
  'MICFailed',
  'JoinReqFailed',
  'NoRoamingAgreement',
  'DevRoamingDisallowed',
  'RoamingActDisallowed',
  'ActivationDisallowed',
  'UnknownDevEUI',
  'UnknownDevAddr',
  'UnknownSender',
  'UnknownReceiver',
  'Deferred',
  'XmitFailed',
  'InvalidFPort',
  'InvalidProtocolVersion',
  'StaleDeviceProfile',
  'MalformedRequest',
  'FrameSizeError',
  'Other',
  'NoAction',
  'FrameReplayed',
] as const;
export type ResultCode = (typeof resultCodes)[number];

/** Codes that exist only from TS002-1.1 on; a 1.0 peer gets "Other" instead. */
const ONLY_IN_1_1: ReadonlySet<ResultCode> = new Set(['NoAction', 'FrameReplayed']);

/**
 * The string to put in Result.ResultCode for a given ProtocolVersion:
 * - TS002 spells UnknownReceiver "UnkownReceiver" (sic) in both versions; peers match that exact string.
 * - 1.1 renamed MalformedRequest to MalformedMessage.
 */
export function resultCodeText(code: ResultCode, protocolVersion: '1.0' | '1.1'): string {
  if (code === 'UnknownReceiver') return 'UnkownReceiver';
  if (code === 'MalformedRequest') return protocolVersion === '1.1' ? 'MalformedMessage' : 'MalformedRequest';
  if (protocolVersion === '1.0' && ONLY_IN_1_1.has(code)) return 'Other';
  return code;
}

/** Reads a ResultCode received from a peer, accepting both spellings of the misspelt names. */
export function parseResultCodeText(text: string): ResultCode | undefined {
  if (text === 'UnkownReceiver') return 'UnknownReceiver';
  if (text === 'MalformedMessage') return 'MalformedRequest';
  return (resultCodes as readonly string[]).includes(text) ? (text as ResultCode) : undefined;
}
