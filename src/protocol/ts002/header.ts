import { eui64FromBeHex } from '../eui64.js';
import type { RequestHeader } from './messages.js';

/**
 * Answer header (TS002-1.0 §22.1): same ProtocolVersion and TransactionID, sender and receiver swapped,
 * the requester's SenderToken echoed as ReceiverToken, and for 1.1 its SenderNSID as ReceiverNSID.
 */
export function answerHeader(req: RequestHeader, messageType: string, receiverId: string): Record<string, unknown> {
  const h: Record<string, unknown> = {
    ProtocolVersion: req.protocolVersion,
    // Exact in what we emit: the JoinEUI in canonical upper-case hex, however the requester spelt it.
    SenderID: canonicalEui(req.receiverId),
    ReceiverID: receiverId,
    TransactionID: req.transactionId,
    MessageType: messageType,
  };
  if (req.senderToken !== undefined) h['ReceiverToken'] = req.senderToken;
  if (req.protocolVersion === '1.1' && req.senderNsId !== undefined) h['ReceiverNSID'] = req.senderNsId;
  return h;
}

function canonicalEui(text: string): string {
  try {
    return eui64FromBeHex(text);
  } catch {
    return text;
  }
}
