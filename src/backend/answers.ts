import type { ExportedKey } from '../custody/custody.js';
import type { Activation, AppSKeyDelivery, HomeNetwork } from '../join/service.js';
import { type RequestHeader, answerHeader, keyEnvelopeJson, resultCodeText, type ResultCode, toHex } from '../protocol/index.js';

/*
 * Exact in what we emit (spec-notes §2): upper-case hex, KeyEnvelopes with KEKLabel always present,
 * NSIDs only for 1.1, result-code spelling per ProtocolVersion.
 */

type Answer = Record<string, unknown>;

function result(code: ResultCode, header: { protocolVersion: '1.0' | '1.1' }, description?: string): Answer {
  const r: Answer = { ResultCode: resultCodeText(code, header.protocolVersion) };
  if (description !== undefined) r['Description'] = description;
  return r;
}

function envelope(key: ExportedKey): Answer {
  return { ...keyEnvelopeJson(key.kekLabel, key.key) };
}

export function activationAnswer(req: RequestHeader, answerType: 'JoinAns' | 'RejoinAns', receiverId: string, a: Activation): Answer {
  const answer: Answer = {
    ...answerHeader(req, answerType, receiverId),
    Result: result('Success', req),
    PHYPayload: toHex(a.phyPayload),
    Lifetime: a.lifetime,
  };
  if (a.network.scheme === 'legacy') {
    answer['NwkSKey'] = envelope(a.network.nwkSKey);
  } else {
    answer['SNwkSIntKey'] = envelope(a.network.sNwkSIntKey);
    answer['FNwkSIntKey'] = envelope(a.network.fNwkSIntKey);
    answer['NwkSEncKey'] = envelope(a.network.nwkSEncKey);
  }
  if (a.appSKey !== undefined) answer['AppSKey'] = envelope(a.appSKey);
  answer['SessionKeyID'] = a.sessionKeyId;
  return answer;
}

export function appSKeyAnswer(req: RequestHeader, receiverId: string, d: AppSKeyDelivery): Answer {
  return {
    ...answerHeader(req, 'AppSKeyAns', receiverId),
    Result: result('Success', req),
    DevEUI: d.devEui,
    AppSKey: envelope(d.appSKey),
    SessionKeyID: d.sessionKeyId,
  };
}

export function homeNsAnswer(req: RequestHeader, receiverId: string, h: HomeNetwork): Answer {
  const answer: Answer = { ...answerHeader(req, 'HomeNSAns', receiverId), Result: result('Success', req), HNetID: h.homeNetId };
  // HNSID exists from TS002-1.1 on.
  if (req.protocolVersion === '1.1' && h.homeNsId !== null) answer['HNSID'] = h.homeNsId;
  return answer;
}

export function failureAnswer(
  req: RequestHeader,
  answerType: string,
  receiverId: string,
  code: ResultCode,
  description: string,
  extra: Answer = {},
): Answer {
  return { ...answerHeader(req, answerType, receiverId), ...extra, Result: result(code, req, description) };
}
