import { parseResultCodeText } from '../src/protocol/index.js';
import type { Ts002HttpResponse } from './ts002-transport.js';

/*
 * What a TS002 client can hold the Join Server's answer to (TS002-1.0 §22.1, spec-notes §2.2, §4.5).
 * Each finding is a string for the report; the simulators are Joinkeep's conformance harness, so they
 * collect deviations instead of stopping at the first.
 */

export interface SentHeader {
  readonly ProtocolVersion: string;
  readonly SenderID: string;
  readonly ReceiverID: string;
  readonly TransactionID: number;
  readonly MessageType: string;
  readonly SenderNSID?: string;
}

/** Fields of an answer that carry hex; we expect the server's canonical UPPER case. */
const HEX_FIELDS = ['SenderID', 'ReceiverID', 'ReceiverNSID', 'PHYPayload', 'DevEUI', 'SessionKeyID', 'HNetID', 'HNSID'] as const;

export function checkAnswer(sent: SentHeader, answerType: string, res: Ts002HttpResponse, senderIsText = false): string[] {
  const issues: string[] = [];
  // Every peer in the field expects 200 for every backend answer, success or failure (spec-notes §2.1).
  if (res.status !== 200) issues.push(`HTTP status ${res.status}, expected 200 with a Result`);
  if (!res.contentType?.toLowerCase().startsWith('application/json')) issues.push(`Content-Type ${res.contentType ?? 'absent'}, expected application/json`);
  const a = res.json;
  if (typeof a !== 'object' || a === null || Array.isArray(a)) {
    issues.push('answer body is not a JSON object');
    return issues;
  }
  const o = a as Record<string, unknown>;
  if (o['ProtocolVersion'] !== sent.ProtocolVersion) issues.push(`ProtocolVersion ${JSON.stringify(o['ProtocolVersion'])}, expected ${sent.ProtocolVersion}`);
  if (o['TransactionID'] !== sent.TransactionID) issues.push(`TransactionID ${JSON.stringify(o['TransactionID'])} does not echo ${sent.TransactionID}`);
  if (o['MessageType'] !== answerType) issues.push(`MessageType ${JSON.stringify(o['MessageType'])}, expected ${answerType}`);
  if (!sameId(o['SenderID'], sent.ReceiverID)) issues.push(`SenderID ${JSON.stringify(o['SenderID'])} is not the request's ReceiverID ${sent.ReceiverID}`);
  if (!sameId(o['ReceiverID'], sent.SenderID, senderIsText)) issues.push(`ReceiverID ${JSON.stringify(o['ReceiverID'])} is not the request's SenderID ${sent.SenderID}`);
  if (sent.ProtocolVersion === '1.1' && sent.SenderNSID !== undefined && !sameId(o['ReceiverNSID'], sent.SenderNSID)) {
    issues.push(`ReceiverNSID ${JSON.stringify(o['ReceiverNSID'])} does not echo SenderNSID ${sent.SenderNSID}`);
  }
  const result = o['Result'];
  const code = typeof result === 'object' && result !== null ? (result as Record<string, unknown>)['ResultCode'] : undefined;
  if (typeof code !== 'string') issues.push('Result.ResultCode is missing');
  else {
    if (parseResultCodeText(code) === undefined) issues.push(`Result.ResultCode ${JSON.stringify(code)} is not a TS002 code`);
    if (sent.ProtocolVersion === '1.0' && ['MalformedMessage', 'NoAction', 'FrameReplayed'].includes(code)) issues.push(`ResultCode ${code} does not exist in TS002-1.0`);
    if (sent.ProtocolVersion === '1.1' && code === 'MalformedRequest') issues.push('TS002-1.1 names it MalformedMessage, not MalformedRequest');
  }
  for (const f of HEX_FIELDS) {
    const v = o[f];
    if (f === 'ReceiverID' && senderIsText) continue;
    if (typeof v === 'string' && /[a-f]/.test(v) && /^[0-9a-fA-F]+$/.test(v)) issues.push(`${f} is not UPPER-case hex`);
  }
  for (const f of ['NwkSKey', 'FNwkSIntKey', 'SNwkSIntKey', 'NwkSEncKey', 'AppSKey'] as const) {
    const env = o[f] as Record<string, unknown> | undefined;
    const k = env?.['AESKey'];
    if (typeof k === 'string' && /[a-f]/.test(k)) issues.push(`${f}.AESKey is not UPPER-case hex`);
  }
  return issues;
}

function sameId(got: unknown, expected: string, text = false): boolean {
  if (typeof got !== 'string') return false;
  return text ? got === expected : got.replace(/^0x/i, '').toUpperCase() === expected.replace(/^0x/i, '').toUpperCase();
}

export function resultOf(json: unknown): { code: string; description: string | undefined } {
  const r = (json as Record<string, unknown> | undefined)?.['Result'] as Record<string, unknown> | undefined;
  const code = typeof r?.['ResultCode'] === 'string' ? (r['ResultCode'] as string) : '(none)';
  return { code, description: typeof r?.['Description'] === 'string' ? (r['Description'] as string) : undefined };
}
