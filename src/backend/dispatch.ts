import type { JoinService } from '../join/service.js';
import {
  type RequestHeader,
  type ResultCode,
  asObject,
  parseAppSKeyReq,
  parseHomeNsReq,
  parseJoinReq,
  parseRequestHeader,
} from '../protocol/index.js';
import type { Storage } from '../storage/storage.js';
import { activationAnswer, appSKeyAnswer, failureAnswer, homeNsAnswer } from './answers.js';
import { type Credentials, authenticatePeer } from './authenticate.js';
import type { Admission } from './admission.js';
import { BackendError } from './errors.js';
import { resultFor } from './result-codes.js';
import { answerTypeFor, requesterId, salvageFields, salvageHeader } from './salvage-header.js';

/** What one request produced: the answer body, and facts for the log line, metrics and audit. */
export interface Outcome {
  readonly answer: Record<string, unknown>;
  readonly messageType: string;
  readonly resultCode: ResultCode;
  readonly macVersion: string;
  readonly devEui?: string | undefined;
  readonly sender?: string | undefined;
  readonly description?: string | undefined;
  /** Set when the failure is ours (storage, custody): logged with its cause. */
  readonly internalError?: unknown;
}

interface Progress {
  header?: RequestHeader;
  fields: Record<string, unknown>;
  sender?: string;
  macVersion: string;
}

/**
 * One Backend Interfaces request, from raw body to answer: parse → authenticate the sender → parse the
 * message → join engine → answer. Every failure becomes an answer with a Result (HTTP 200, spec-notes §2.1).
 */
export interface DispatchDeps {
  readonly storage: Storage;
  readonly joins: JoinService;
  /** Bounds activation requests in progress (src/backend/admission.ts); none: unbounded. */
  readonly admission?: Admission | undefined;
}

export async function dispatch(deps: DispatchDeps, raw: string, credentials: Credentials): Promise<Outcome> {
  const progress: Progress = { fields: {}, macVersion: '' };
  try {
    return await answer(deps, raw, credentials, progress);
  } catch (error) {
    const header = progress.header ?? salvageHeader(progress.fields);
    const messageType = header.messageType;
    const r = resultFor(error);
    const devEui = typeof progress.fields['DevEUI'] === 'string' ? progress.fields['DevEUI'] : undefined;
    const extra: Record<string, unknown> = {};
    // AppSKeyAns carries DevEUI and SessionKeyID even on failure (TS002-1.0 Table 13).
    if (messageType === 'AppSKeyReq') {
      if (devEui !== undefined) extra['DevEUI'] = devEui;
      if (typeof progress.fields['SessionKeyID'] === 'string') extra['SessionKeyID'] = progress.fields['SessionKeyID'];
    }
    const receiver = messageType === 'AppSKeyReq' ? header.senderId : requesterId(header);
    return {
      answer: failureAnswer(header, answerTypeFor(messageType), receiver, r.resultCode, r.description, extra),
      messageType: messageType || 'unknown',
      resultCode: r.resultCode,
      macVersion: progress.macVersion,
      devEui,
      sender: progress.sender,
      description: r.description,
      internalError: r.internal ? error : undefined,
    };
  }
}

async function answer(deps: DispatchDeps, raw: string, credentials: Credentials, progress: Progress): Promise<Outcome> {
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch {
    progress.fields = salvageFields(undefined, raw);
    throw new BackendError('MALFORMED_JSON', 'the request body is not valid JSON');
  }
  const o = asObject(body);
  progress.fields = o;
  const header = parseRequestHeader(o);
  progress.header = header;
  const base = { messageType: header.messageType, resultCode: 'Success' as const };

  switch (header.messageType) {
    case 'JoinReq':
    case 'RejoinReq': {
      // Admission before anything costly (authentication reads storage): a shed request gets its answer at once and
      // never reaches the join engine, so it consumes no JoinNonce. The header is parsed, so the answer matches it.
      const release = deps.admission === undefined ? undefined : await deps.admission.enter();
      try {
        return await activate(deps, credentials, header, o, progress);
      } finally {
        release?.();
      }
    }
    case 'AppSKeyReq': {
      const caller = await authenticatePeer(deps.storage, credentials, header, 'as');
      progress.sender = caller.id;
      const msg = parseAppSKeyReq(o, header);
      const delivery = await deps.joins.appSKey(caller, msg);
      return { ...base, answer: appSKeyAnswer(header, caller.asId!, delivery), macVersion: '', devEui: msg.devEui, sender: caller.id };
    }
    case 'HomeNSReq': {
      const caller = await authenticatePeer(deps.storage, credentials, header, 'ns');
      progress.sender = caller.id;
      const msg = parseHomeNsReq(o, header);
      const home = await deps.joins.homeNetwork(caller, msg);
      return { ...base, answer: homeNsAnswer(header, caller.netId!, home), macVersion: '', devEui: msg.devEui, sender: caller.id };
    }
    default:
      throw new BackendError('UNSUPPORTED_MESSAGE_TYPE', `MessageType ${JSON.stringify(header.messageType)} is not served by a Join Server (JoinReq, RejoinReq, AppSKeyReq, HomeNSReq)`);
  }
}

/** JoinReq / RejoinReq once admitted: authenticate the network server → parse → join engine → answer. */
async function activate(deps: DispatchDeps, credentials: Credentials, header: RequestHeader, o: Record<string, unknown>, progress: Progress): Promise<Outcome> {
  const caller = await authenticatePeer(deps.storage, credentials, header, 'ns');
  progress.sender = caller.id;
  const msg = parseJoinReq(o, header);
  progress.macVersion = msg.macVersion;
  const join = header.messageType === 'JoinReq';
  const activation = join ? await deps.joins.join(caller, msg) : await deps.joins.rejoin(caller, msg);
  const answerType = join ? 'JoinAns' : 'RejoinAns';
  return {
    messageType: header.messageType,
    resultCode: 'Success',
    answer: activationAnswer(header, answerType, caller.netId!, activation),
    macVersion: msg.macVersion,
    devEui: msg.devEui,
    sender: caller.id,
  };
}
