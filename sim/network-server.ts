import type http from 'node:http';
import {
  type DevAddr,
  type Eui64,
  type MacVersion,
  type NetId,
  decodeJoinRequest,
} from '../src/protocol/index.js';
import { type SentHeader, checkAnswer, resultOf } from './answer-checks.js';
import { type Kek, unwrapEnvelope } from './key-envelope.js';
import { type Ts002HttpResponse, TransportError, postTs002 } from './ts002-transport.js';
import { type WireFormat, type WireStyle, wireFormat } from './wire-style.js';

/*
 * A home network server as a TS002 client of the Join Server (TS002-1.0 §8, §12, §15): it sends JoinReq,
 * RejoinReq and HomeNSReq, and unwraps the network session keys of the answer with the KEK it shares with
 * the Join Server. The AppSKey envelope is not for the NS: it is handed on untouched to the AS.
 */

export interface NetworkServerConfig {
  readonly url: string;
  readonly token: string;
  readonly netId: NetId;
  /** LoRaWAN Backend Interfaces 1.1 NSID; sent as SenderNSID when the wire speaks ProtocolVersion 1.1. */
  readonly nsId?: Eui64 | undefined;
  readonly kek: Kek;
  readonly style: WireStyle;
  readonly protocolVersion?: '1.0' | '1.1' | undefined;
  readonly agent?: http.Agent | undefined;
  readonly timeoutMs?: number | undefined;
}

/** What the NS puts around the device's frame: its own choices for the Join-accept. */
export interface ActivationRequest {
  readonly phyPayload: Buffer;
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly macVersion: MacVersion;
  readonly devAddr: DevAddr;
  readonly dlSettings: number;
  readonly rxDelay: number;
  readonly cfList?: Buffer | undefined;
}

export type NsSessionKeys =
  | { readonly scheme: 'legacy'; readonly nwkSKey: Buffer }
  | { readonly scheme: 'lorawan11'; readonly fNwkSIntKey: Buffer; readonly sNwkSIntKey: Buffer; readonly nwkSEncKey: Buffer };

export type Failure =
  | { readonly ok: false; readonly kind: 'result'; readonly resultCode: string; readonly description: string | undefined; readonly issues: string[] }
  | { readonly ok: false; readonly kind: 'transport'; readonly detail: string; readonly issues: string[] }
  | { readonly ok: false; readonly kind: 'bad-answer'; readonly detail: string; readonly issues: string[] };

export interface ActivationAnswer {
  readonly ok: true;
  readonly phyPayload: Buffer;
  readonly lifetime: number | undefined;
  readonly sessionKeyId: string | undefined;
  readonly nsKeys: NsSessionKeys;
  /** True when the NS keys came in clear (empty KEKLabel). */
  readonly nsKeysInClear: boolean;
  /** Opaque to the NS; forwarded to the AS. */
  readonly appSKeyEnvelope: unknown;
  readonly issues: string[];
}

export interface HomeNsAnswer {
  readonly ok: true;
  readonly hNetId: string;
  readonly hNsId: string | undefined;
  readonly issues: string[];
}

export class NetworkServerClient {
  readonly #wire: WireFormat;

  constructor(readonly config: NetworkServerConfig) {
    this.#wire = wireFormat(config.style, config.protocolVersion ?? (config.style === 'tts' && config.nsId === undefined ? '1.0' : undefined));
    if (this.#wire.protocolVersion === '1.1' && config.nsId === undefined) {
      throw new RangeError('TS002-1.1 requests from an NS carry SenderNSID: give the NS an NSID');
    }
  }

  get wire(): WireFormat {
    return this.#wire;
  }

  joinReq(r: ActivationRequest): Promise<ActivationAnswer | Failure> {
    // A real NS reads the JoinEUI from the frame; it must agree with what the caller thinks it is sending.
    const joinEui = decodeJoinRequest(r.phyPayload).joinEui;
    return this.#activate('JoinReq', 'JoinAns', { ...r, joinEui });
  }

  /** Rejoin-request of any type; for types 0/2 the JoinEUI comes from the NS's device context (not in the frame). */
  rejoinReq(r: ActivationRequest): Promise<ActivationAnswer | Failure> {
    return this.#activate('RejoinReq', 'RejoinAns', r);
  }

  async homeNsReq(devEui: Eui64, joinEui: Eui64): Promise<HomeNsAnswer | Failure> {
    const header = this.#header('HomeNSReq', joinEui);
    const exchanged = await this.#post(header, 'HomeNSAns', { DevEUI: this.#wire.hex(devEui) });
    if (!exchanged.ok) return exchanged;
    const { json, issues } = exchanged;
    const hNetId = json['HNetID'];
    if (typeof hNetId !== 'string') return { ok: false, kind: 'bad-answer', detail: 'HomeNSAns Success without HNetID', issues };
    const hNsId = json['HNSID'];
    return { ok: true, hNetId, hNsId: typeof hNsId === 'string' ? hNsId : undefined, issues };
  }

  /**
   * The JoinReq message this client would send, without sending it: load generators build requests ahead of
   * time so that building them is not part of what they measure.
   */
  joinReqMessage(r: ActivationRequest): { header: SentHeader; message: Record<string, unknown> } {
    const joinEui = decodeJoinRequest(r.phyPayload).joinEui;
    const { header, body } = this.#activationMessage('JoinReq', { ...r, joinEui });
    return { header, message: { ...header, ...body } };
  }

  /** The RejoinReq message this client would send, without sending it (for types 0/2 `r.joinEui` is the NS's context). */
  rejoinReqMessage(r: ActivationRequest): { header: SentHeader; message: Record<string, unknown> } {
    const { header, body } = this.#activationMessage('RejoinReq', r);
    return { header, message: { ...header, ...body } };
  }

  /**
   * Reads the answer to a JoinReq/RejoinReq this client built (joinReqMessage, rejoinReqMessage) and someone else
   * sent: checks it and unwraps the network session keys, exactly as when the client sends the request itself.
   */
  activationAnswer(header: SentHeader, res: Ts002HttpResponse): ActivationAnswer | Failure {
    const answerType = header.MessageType === 'RejoinReq' ? 'RejoinAns' : 'JoinAns';
    const exchanged = exchangeOutcome(header, answerType, res);
    return exchanged.ok ? this.#activationAnswer(answerType, exchanged.json, exchanged.issues) : exchanged;
  }

  #activationMessage(messageType: 'JoinReq' | 'RejoinReq', r: ActivationRequest): { header: SentHeader; body: Record<string, unknown> } {
    const w = this.#wire;
    const header = this.#header(messageType, r.joinEui);
    const body: Record<string, unknown> = {
      MACVersion: w.macVersion(r.macVersion),
      PHYPayload: w.hex(r.phyPayload),
      DevEUI: w.hex(r.devEui),
      DevAddr: w.hex(r.devAddr),
      DLSettings: w.hex(Buffer.of(r.dlSettings)),
      RxDelay: r.rxDelay,
    };
    if (r.cfList) body['CFList'] = w.hex(r.cfList);
    return { header, body };
  }

  async #activate(messageType: 'JoinReq' | 'RejoinReq', answerType: string, r: ActivationRequest): Promise<ActivationAnswer | Failure> {
    const { header, body } = this.#activationMessage(messageType, r);
    const exchanged = await this.#post(header, answerType, body);
    if (!exchanged.ok) return exchanged;
    return this.#activationAnswer(answerType, exchanged.json, exchanged.issues);
  }

  #activationAnswer(answerType: string, json: Record<string, unknown>, issues: string[]): ActivationAnswer | Failure {
    const phy = json['PHYPayload'];
    if (typeof phy !== 'string' || !/^[0-9a-fA-F]+$/.test(phy)) return { ok: false, kind: 'bad-answer', detail: `${answerType} Success without a hex PHYPayload`, issues };
    const keys = this.#unwrapNsKeys(json, issues);
    if ('detail' in keys) return { ok: false, kind: 'bad-answer', detail: keys.detail, issues };
    const lifetime = json['Lifetime'];
    if (typeof lifetime !== 'number') issues.push(`${answerType}: Lifetime is ${lifetime === undefined ? 'absent' : 'not a number'}`);
    const sessionKeyId = json['SessionKeyID'];
    if (json['AppSKey'] === undefined && sessionKeyId === undefined) issues.push(`${answerType}: neither AppSKey nor SessionKeyID (TS002 needs one)`);
    return {
      ok: true,
      phyPayload: Buffer.from(phy, 'hex'),
      lifetime: typeof lifetime === 'number' ? lifetime : undefined,
      sessionKeyId: typeof sessionKeyId === 'string' ? sessionKeyId : undefined,
      nsKeys: keys.keys,
      nsKeysInClear: keys.clear,
      appSKeyEnvelope: json['AppSKey'],
      issues,
    };
  }

  #unwrapNsKeys(json: Record<string, unknown>, issues: string[]): { keys: NsSessionKeys; clear: boolean } | { detail: string } {
    const kek = this.config.kek;
    if (json['NwkSKey'] !== undefined) {
      // TS002 §8: NwkSKey for a 1.0.x session; the three 1.1 keys must not appear alongside it.
      if (json['FNwkSIntKey'] !== undefined) issues.push('answer carries both NwkSKey and FNwkSIntKey');
      const k = unwrapEnvelope(json['NwkSKey'], kek, 'NwkSKey');
      return k.ok ? { keys: { scheme: 'legacy', nwkSKey: k.key }, clear: k.kekLabel === null } : { detail: k.detail };
    }
    const f = unwrapEnvelope(json['FNwkSIntKey'], kek, 'FNwkSIntKey');
    const s = unwrapEnvelope(json['SNwkSIntKey'], kek, 'SNwkSIntKey');
    const e = unwrapEnvelope(json['NwkSEncKey'], kek, 'NwkSEncKey');
    if (!f.ok) return { detail: f.reason === 'missing' ? 'answer carries neither NwkSKey nor FNwkSIntKey/SNwkSIntKey/NwkSEncKey' : f.detail };
    if (!s.ok) return { detail: s.detail };
    if (!e.ok) return { detail: e.detail };
    return { keys: { scheme: 'lorawan11', fNwkSIntKey: f.key, sNwkSIntKey: s.key, nwkSEncKey: e.key }, clear: f.kekLabel === null };
  }

  #header(messageType: string, joinEui: Eui64): SentHeader {
    const w = this.#wire;
    const h: SentHeader = {
      ProtocolVersion: w.protocolVersion,
      SenderID: w.hex(this.config.netId),
      ReceiverID: w.hex(joinEui),
      TransactionID: w.transactionId(),
      MessageType: messageType,
      ...(w.protocolVersion === '1.1' && this.config.nsId !== undefined ? { SenderNSID: w.hex(this.config.nsId) } : {}),
    };
    return h;
  }

  async #post(header: SentHeader, answerType: string, body: Record<string, unknown>): Promise<
    { ok: true; json: Record<string, unknown>; issues: string[] } | Failure
  > {
    let res: Ts002HttpResponse;
    try {
      res = await postTs002(this.config, { ...header, ...body });
    } catch (e) {
      if (e instanceof TransportError) return { ok: false, kind: 'transport', detail: e.message, issues: [] };
      throw e;
    }
    return exchangeOutcome(header, answerType, res);
  }
}

/** Shared by the NS and AS clients: checks the answer and splits Success from the rest. */
export function exchangeOutcome(header: SentHeader, answerType: string, res: Ts002HttpResponse, senderIsText = false):
  { ok: true; json: Record<string, unknown>; issues: string[] } | Failure {
  const issues = checkAnswer(header, answerType, res, senderIsText);
  if (typeof res.json !== 'object' || res.json === null) {
    return { ok: false, kind: 'bad-answer', detail: `HTTP ${res.status} with ${res.text === '' ? 'an empty body' : 'a body that is not JSON'}`, issues };
  }
  const { code, description } = resultOf(res.json);
  if (code !== 'Success') return { ok: false, kind: 'result', resultCode: code, description, issues };
  return { ok: true, json: res.json as Record<string, unknown>, issues };
}
