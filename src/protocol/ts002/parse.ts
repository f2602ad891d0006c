import { devAddrFromBeHex } from '../dev-addr.js';
import { ProtocolError } from '../errors.js';
import { eui64FromBeHex } from '../eui64.js';
import { parseHex, toHex } from '../hex.js';
import { parseMacVersion } from '../mac-version.js';
import type {
  AppSKeyReqMessage,
  HomeNsReqMessage,
  JoinReqMessage,
  KeyEnvelopeJson,
  ProtocolVersion,
  RequestHeader,
} from './messages.js';

/*
 * Liberal in what we accept (spec-notes §2.3, §4.5): hex in either case with optional 0x,
 * every MACVersion spelling peers use, TransactionID 0, numbers sent as numeric strings.
 * Every failure is a ProtocolError naming the field, which the backend answers as
 * MalformedRequest / MalformedMessage.
 */

type Json = Record<string, unknown>;

export function asObject(body: unknown): Json {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ProtocolError('INVALID_FIELD', 'message must be a JSON object');
  }
  return body as Json;
}

export function parseProtocolVersion(value: unknown): ProtocolVersion {
  if (value === '1.0' || value === '1.0.0') return '1.0';
  if (value === '1.1' || value === '1.1.0') return '1.1';
  if (value === undefined) throw new ProtocolError('MISSING_FIELD', 'ProtocolVersion is missing', 'ProtocolVersion');
  throw new ProtocolError('INVALID_PROTOCOL_VERSION', `ProtocolVersion ${JSON.stringify(value)} is not supported (1.0, 1.1)`, 'ProtocolVersion');
}

function requiredString(o: Json, field: string): string {
  const v = o[field];
  if (v === undefined || v === null) throw new ProtocolError('MISSING_FIELD', `${field} is missing`, field);
  if (typeof v !== 'string' || v.trim() === '') throw new ProtocolError('INVALID_FIELD', `${field} must be a non-empty string`, field);
  return v.trim();
}

function optionalString(o: Json, field: string): string | undefined {
  const v = o[field];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ProtocolError('INVALID_FIELD', `${field} must be a string`, field);
  return v.trim();
}

function integer(o: Json, field: string, min: number, max: number, fallback?: number): number {
  const v = o[field];
  if ((v === undefined || v === null) && fallback !== undefined) return fallback;
  if (v === undefined || v === null) throw new ProtocolError('MISSING_FIELD', `${field} is missing`, field);
  const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new ProtocolError('INVALID_FIELD', `${field} must be an integer ${min}..${max}`, field);
  }
  return n;
}

export function parseRequestHeader(o: Json): RequestHeader {
  const protocolVersion = parseProtocolVersion(o['ProtocolVersion']);
  const senderNsIdText = optionalString(o, 'SenderNSID');
  return {
    protocolVersion,
    messageType: requiredString(o, 'MessageType'),
    senderId: requiredString(o, 'SenderID'),
    receiverId: requiredString(o, 'ReceiverID'),
    // TS002 makes it mandatory, but The Things Stack's client always sends 0; absent is read as 0 too.
    transactionId: integer(o, 'TransactionID', 0, 0xffffffff, 0),
    senderToken: optionalString(o, 'SenderToken'),
    senderNsId: senderNsIdText === undefined ? undefined : eui64FromBeHex(senderNsIdText, 'SenderNSID'),
  };
}

/** JoinReq and RejoinReq share one field set (TS002-1.0 §15). */
export function parseJoinReq(o: Json, header: RequestHeader): JoinReqMessage {
  const cfListText = optionalString(o, 'CFList');
  return {
    header,
    macVersion: parseMacVersion(o['MACVersion'] ?? missing('MACVersion')),
    phyPayload: parseHex(requiredString(o, 'PHYPayload'), 'PHYPayload'),
    devEui: eui64FromBeHex(requiredString(o, 'DevEUI'), 'DevEUI'),
    devAddr: devAddrFromBeHex(requiredString(o, 'DevAddr'), 'DevAddr'),
    dlSettings: parseHex(requiredString(o, 'DLSettings'), 'DLSettings', 1)[0] ?? 0,
    rxDelay: integer(o, 'RxDelay', 0, 15),
    cfList: cfListText === undefined ? undefined : parseHex(cfListText, 'CFList', 16),
  };
}

export function parseAppSKeyReq(o: Json, header: RequestHeader): AppSKeyReqMessage {
  const id = parseHex(requiredString(o, 'SessionKeyID'), 'SessionKeyID');
  if (id.length === 0 || id.length > 64) throw new ProtocolError('INVALID_LENGTH', 'SessionKeyID must be 1..64 bytes', 'SessionKeyID');
  return { header, devEui: eui64FromBeHex(requiredString(o, 'DevEUI'), 'DevEUI'), sessionKeyId: toHex(id) };
}

export function parseHomeNsReq(o: Json, header: RequestHeader): HomeNsReqMessage {
  return { header, devEui: eui64FromBeHex(requiredString(o, 'DevEUI'), 'DevEUI') };
}

/** A TS002 KeyEnvelope; `kekLabel` null when the key travels in clear (empty or absent KEKLabel). */
export function parseKeyEnvelope(value: unknown, field = 'KeyEnvelope'): { kekLabel: string | null; aesKey: Buffer } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError('INVALID_FIELD', `${field} must be an object {"KEKLabel": "...", "AESKey": "..."}`, field);
  }
  const o = value as Json;
  const label = o['KEKLabel'];
  if (label !== undefined && label !== null && typeof label !== 'string') {
    throw new ProtocolError('INVALID_FIELD', `${field}.KEKLabel must be a string`, field);
  }
  const kekLabel = typeof label === 'string' && label !== '' ? label : null;
  const aesKey = parseHex(o['AESKey'] ?? missing(`${field}.AESKey`), `${field}.AESKey`);
  return { kekLabel, aesKey };
}

export function keyEnvelopeJson(kekLabel: string | null, aesKey: Uint8Array): KeyEnvelopeJson {
  return { KEKLabel: kekLabel ?? '', AESKey: toHex(aesKey) };
}

function missing(field: string): never {
  throw new ProtocolError('MISSING_FIELD', `${field} is missing`, field);
}
