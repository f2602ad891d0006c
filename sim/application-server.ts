import type http from 'node:http';
import type { Eui64 } from '../src/protocol/index.js';
import type { SentHeader } from './answer-checks.js';
import { type Kek, unwrapEnvelope } from './key-envelope.js';
import { type Failure, exchangeOutcome } from './network-server.js';
import { TransportError, postTs002 } from './ts002-transport.js';
import { type WireStyle, wireFormat } from './wire-style.js';

/*
 * An application server as a TS002 client (TS002-1.0 §13): it fetches the AppSKey of a session with
 * AppSKeyReq, or receives the envelope the NS forwarded from the JoinAns, and unwraps it with its KEK.
 */

export interface ApplicationServerConfig {
  readonly url: string;
  readonly token: string;
  /** AS-ID: free text, the AS's SenderID. */
  readonly asId: string;
  /** Label '' when the AS knows only its key and accepts whatever label the JS wrote. */
  readonly kek: Kek;
  readonly style: WireStyle;
  readonly protocolVersion?: '1.0' | '1.1' | undefined;
  readonly agent?: http.Agent | undefined;
}

export interface AppSKeyAnswer {
  readonly ok: true;
  readonly appSKey: Buffer;
  readonly inClear: boolean;
  readonly sessionKeyId: string | undefined;
  readonly issues: string[];
}

export class ApplicationServerClient {
  constructor(readonly config: ApplicationServerConfig) {}

  /** The AppSKey envelope of a JoinAns, as relayed by the NS. */
  unwrapForwarded(envelope: unknown): { ok: true; appSKey: Buffer; inClear: boolean } | { ok: false; detail: string } {
    const r = unwrapEnvelope(envelope, this.config.kek, 'AppSKey');
    return r.ok ? { ok: true, appSKey: r.key, inClear: r.kekLabel === null } : { ok: false, detail: r.detail };
  }

  async appSKeyReq(devEui: Eui64, joinEui: Eui64, sessionKeyId: string): Promise<AppSKeyAnswer | Failure> {
    const w = wireFormat(this.config.style, this.config.protocolVersion);
    const header: SentHeader = {
      ProtocolVersion: w.protocolVersion,
      SenderID: this.config.asId,
      ReceiverID: w.hex(joinEui),
      TransactionID: w.transactionId(),
      MessageType: 'AppSKeyReq',
    };
    let res;
    try {
      res = await postTs002(this.config, { ...header, DevEUI: w.hex(devEui), SessionKeyID: w.hex(sessionKeyId) });
    } catch (e) {
      if (e instanceof TransportError) return { ok: false, kind: 'transport', detail: e.message, issues: [] };
      throw e;
    }
    const exchanged = exchangeOutcome(header, 'AppSKeyAns', res, true);
    if (!exchanged.ok) return exchanged;
    const { json, issues } = exchanged;
    const echoed = json['SessionKeyID'];
    if (typeof echoed !== 'string' || echoed.toUpperCase() !== sessionKeyId.toUpperCase()) issues.push(`AppSKeyAns SessionKeyID ${JSON.stringify(echoed)} does not echo ${sessionKeyId}`);
    const dev = json['DevEUI'];
    if (typeof dev !== 'string' || dev.toUpperCase() !== devEui) issues.push(`AppSKeyAns DevEUI ${JSON.stringify(dev)} is not ${devEui}`);
    const k = unwrapEnvelope(json['AppSKey'], this.config.kek, 'AppSKey');
    if (!k.ok) return { ok: false, kind: 'bad-answer', detail: k.detail, issues };
    return { ok: true, appSKey: k.key, inClear: k.kekLabel === null, sessionKeyId: typeof echoed === 'string' ? echoed : undefined, issues };
  }
}
