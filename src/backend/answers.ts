import type { ExportedKey } from '../custody/custody.js';
import type { Activation, AppSKeyDelivery, HomeNetwork } from '../join/service.js';
import { type KeyEnvelopeJson, type RequestHeader, answerHeader, keyEnvelopeJson, resultCodeText, type ResultCode, toHex } from '../protocol/index.js';

/*
 * Exact in what we emit (spec-notes §2): upper-case hex, KeyEnvelopes with KEKLabel always present,
 * NSIDs only for 1.1, result-code spelling per ProtocolVersion.
 *
 * Each answer is the fresh object answerHeader returns, with the body's fields assigned to it in order. Spreading the
 * header into a new literal instead cost 15 µs per JoinAns against 3 µs (V8 builds the spread copy with a map it then
 * has to extend property by property); on the join path that was as much as the whole answer's JSON serialisation.
 */

type Answer = Record<string, unknown>;

function result(code: ResultCode, header: { protocolVersion: '1.0' | '1.1' }, description?: string): Answer {
  const r: Answer = { ResultCode: resultCodeText(code, header.protocolVersion) };
  if (description !== undefined) r['Description'] = description;
  return r;
}

function envelope(key: ExportedKey): KeyEnvelopeJson {
  return keyEnvelopeJson(key.kekLabel, key.key);
}

export function activationAnswer(req: RequestHeader, answerType: 'JoinAns' | 'RejoinAns', receiverId: string, a: Activation): Answer {
  const answer = answerHeader(req, answerType, receiverId);
  answer['Result'] = result('Success', req);
  answer['PHYPayload'] = toHex(a.phyPayload);
  answer['Lifetime'] = a.lifetime;
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
  const answer = answerHeader(req, 'AppSKeyAns', receiverId);
  answer['Result'] = result('Success', req);
  answer['DevEUI'] = d.devEui;
  answer['AppSKey'] = envelope(d.appSKey);
  answer['SessionKeyID'] = d.sessionKeyId;
  return answer;
}

export function homeNsAnswer(req: RequestHeader, receiverId: string, h: HomeNetwork): Answer {
  const answer = answerHeader(req, 'HomeNSAns', receiverId);
  answer['Result'] = result('Success', req);
  answer['HNetID'] = h.homeNetId;
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
  const answer = Object.assign(answerHeader(req, answerType, receiverId), extra);
  answer['Result'] = result(code, req, description);
  return answer;
}
