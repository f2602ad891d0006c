import { answerTypeOf, eui64FromBeHex, netIdFromBeHex, type RequestHeader } from '../protocol/index.js';

/*
 * When a request cannot be parsed, its answer still needs a header the peer can match. We take what can be
 * read (from the parsed object, or scraped from text that is not JSON) and fall back to neutral values.
 */

const FIELD = (name: string) => new RegExp(`"${name}"\\s*:\\s*("(?:[^"\\\\]|\\\\.)*"|\\d+)`);

export function salvageFields(body: unknown, raw: string): Record<string, unknown> {
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) return body as Record<string, unknown>;
  const fields: Record<string, unknown> = {};
  for (const name of ['ProtocolVersion', 'SenderID', 'ReceiverID', 'TransactionID', 'MessageType', 'SenderToken', 'SenderNSID', 'DevEUI', 'SessionKeyID']) {
    const m = FIELD(name).exec(raw);
    if (m?.[1] !== undefined) {
      try {
        fields[name] = JSON.parse(m[1]);
      } catch {
        // unreadable value: leave the field out
      }
    }
  }
  return fields;
}

export function salvageHeader(o: Record<string, unknown>): RequestHeader {
  const str = (v: unknown) => (typeof v === 'string' ? v.trim() : '');
  const tid = o['TransactionID'];
  const pv = o['ProtocolVersion'];
  return {
    protocolVersion: pv === '1.1' || pv === '1.1.0' ? '1.1' : '1.0',
    senderId: str(o['SenderID']),
    receiverId: canonical(str(o['ReceiverID']), (t) => eui64FromBeHex(t)),
    transactionId: typeof tid === 'number' && Number.isInteger(tid) && tid >= 0 && tid <= 0xffffffff ? tid : 0,
    messageType: str(o['MessageType']),
    senderToken: typeof o['SenderToken'] === 'string' ? o['SenderToken'] : undefined,
  };
}

export function answerTypeFor(messageType: string): string {
  if (messageType in answerTypeOf) return answerTypeOf[messageType as keyof typeof answerTypeOf];
  if (messageType.endsWith('Req')) return `${messageType.slice(0, -3)}Ans`;
  // TS002-1.1 error notification for messages that cannot be answered in kind.
  return 'ErrorNotif';
}

/** Our answers name the requester the way it is registered: canonical NetID for a network server. */
export function requesterId(header: RequestHeader): string {
  return canonical(header.senderId, (t) => netIdFromBeHex(t));
}

function canonical(text: string, parse: (t: string) => string): string {
  try {
    return parse(text);
  } catch {
    return text;
  }
}
