import { aes128EcbEncrypt, aesCmac, micEquals } from '../src/custody/primitives.js';
import {
  type DevAddr,
  type Eui64,
  type JoinReqType,
  type MacVersion,
  type NetId,
  JOIN_REQ_TYPE,
  MHDR,
  decodeDlSettings,
  decodeJoinAcceptPlaintext,
  isLoRaWAN11,
  joinAcceptMicInput11,
  joinAcceptMicInputLegacy,
} from '../src/protocol/index.js';
import {
  type RootKeys,
  type SessionKeys,
  deriveLegacySessionKeys,
  deriveLoRaWAN11SessionKeys,
  jsEncKey,
  jsIntKey,
} from './device-keys.js';

/*
 * A Join-accept processed exactly as an end device processes it (LoRaWAN 1.0.3 §6.2.5, 1.1 §6.2.3;
 * LoRaMac-node LoRaMacCryptoHandleJoinAccept): decrypt, check the MIC with the formula the decrypted OptNeg
 * bit selects, then the JoinNonce rule, then derive the session keys. Pure: the caller owns the state.
 */

/** What the device last sent and is waiting an answer for. */
export type PendingRequest =
  | { readonly kind: 'join-request'; readonly devNonce: number }
  | { readonly kind: 'rejoin-request'; readonly rejoinType: 0 | 1 | 2; readonly rjCount: number };

export const dropReasons = [
  'no-pending-request',
  'invalid-length',
  'invalid-mhdr',
  'rejoin-answer-without-opt-neg',
  'mic-mismatch',
  'join-nonce-not-greater',
  'join-nonce-repeated',
] as const;
export type DropReason = (typeof dropReasons)[number];

export interface AcceptedJoin {
  readonly accepted: true;
  readonly answeredTo: PendingRequest;
  readonly joinNonce: number;
  readonly netId: NetId;
  readonly devAddr: DevAddr;
  readonly dlSettings: number;
  readonly optNeg: boolean;
  readonly rxDelay: number;
  readonly cfList: Buffer | undefined;
  readonly keys: SessionKeys;
}

export interface DroppedJoin {
  readonly accepted: false;
  readonly reason: DropReason;
  readonly detail: string;
}

export type JoinAcceptOutcome = AcceptedJoin | DroppedJoin;

export interface AcceptContext {
  readonly macVersion: MacVersion;
  readonly roots: RootKeys;
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly lastJoinNonce: number;
  readonly pending: PendingRequest | null;
}

export function processJoinAccept(ctx: AcceptContext, phy: Uint8Array): JoinAcceptOutcome {
  const { pending } = ctx;
  if (pending === null) return drop('no-pending-request', 'no Join-request or Rejoin-request is waiting for an answer');
  if (phy.length !== 17 && phy.length !== 33) return drop('invalid-length', `Join-accept must be 17 or 33 bytes, got ${phy.length}`);
  if (((phy[0] ?? 0) & 0xe3) !== MHDR.joinAccept) return drop('invalid-mhdr', `MHDR ${hexByte(phy[0])} is not a LoRaWAN R1 Join-accept`);

  const lorawan11 = isLoRaWAN11(ctx.macVersion);
  const nwkKey = ctx.roots.nwkKey;
  if (lorawan11 && nwkKey === undefined) throw new TypeError('a LoRaWAN 1.1 device needs its NwkKey');

  // LoRaWAN 1.1 §6.2.3: the network "encrypts" with AES decrypt, so the device decrypts with AES *encrypt*,
  // under AppKey (1.0.x), NwkKey (1.1, answer to a Join-request) or JSEncKey (1.1, answer to a Rejoin-request).
  const decryptionKey = !lorawan11 ? ctx.roots.appKey : pending.kind === 'join-request' ? nwkKey! : jsEncKey(nwkKey!, ctx.devEui);
  const plain = Buffer.concat([Buffer.of(phy[0] ?? 0), aes128EcbEncrypt(decryptionKey, phy.subarray(1))]);
  const ja = decodeJoinAcceptPlaintext(plain);

  // A 1.0.x device treats DLSettings bit 7 as RFU; a 1.1 device reads OptNeg from it (1.1 §6.2.3) and picks
  // the MIC formula, the JoinNonce rule and the key derivation from that bit alone.
  const optNeg = lorawan11 && decodeDlSettings(ja.dlSettings).optNeg;
  if (pending.kind === 'rejoin-request' && !optNeg) {
    // Rejoin-requests exist only on LoRaWAN 1.1 networks; an answer claiming a 1.0 network is inconsistent.
    return drop('rejoin-answer-without-opt-neg', 'answer to a Rejoin-request has OptNeg=0');
  }

  const nonce = pending.kind === 'join-request' ? pending.devNonce : pending.rjCount;
  const micOk = optNeg
    ? micEquals(
        aesCmac(jsIntKey(nwkKey!, ctx.devEui), joinAcceptMicInput11({ joinReqType: joinReqTypeOf(pending), joinEui: ctx.joinEui, devNonce: nonce }, ja.body)),
        ja.mic,
      )
    : micEquals(aesCmac(lorawan11 ? nwkKey! : ctx.roots.appKey, joinAcceptMicInputLegacy(ja.body)), ja.mic);
  if (!micOk) {
    return drop('mic-mismatch', optNeg ? 'LoRaWAN 1.1 Join-accept MIC (JSIntKey) does not match' : `legacy Join-accept MIC (${lorawan11 ? 'NwkKey' : 'AppKey'}) does not match`);
  }

  // 1.1 with OptNeg: JoinNonce must be strictly greater than the stored one (LoRaMac-node IsJoinNonce11xOk).
  // 1.0.x (and OptNeg=0): it must differ from the stored one (IsJoinNonce10xOk), which stops a replayed accept.
  if (optNeg && ja.joinNonce <= ctx.lastJoinNonce) {
    return drop('join-nonce-not-greater', `JoinNonce ${ja.joinNonce} is not greater than the last accepted ${ctx.lastJoinNonce}`);
  }
  if (!optNeg && ja.joinNonce === ctx.lastJoinNonce) {
    return drop('join-nonce-repeated', `JoinNonce ${ja.joinNonce} equals the last accepted one`);
  }

  const keys = optNeg
    ? deriveLoRaWAN11SessionKeys({ appKey: ctx.roots.appKey, nwkKey: nwkKey! }, { joinNonce: ja.joinNonce, joinEui: ctx.joinEui, devNonce: nonce })
    : deriveLegacySessionKeys(lorawan11 ? nwkKey! : ctx.roots.appKey, { joinNonce: ja.joinNonce, netId: ja.netId, devNonce: nonce });

  return {
    accepted: true,
    answeredTo: pending,
    joinNonce: ja.joinNonce,
    netId: ja.netId,
    devAddr: ja.devAddr,
    dlSettings: ja.dlSettings,
    optNeg,
    rxDelay: ja.rxDelay,
    cfList: ja.cfList === undefined ? undefined : Buffer.from(ja.cfList),
    keys,
  };
}

function joinReqTypeOf(p: PendingRequest): JoinReqType {
  if (p.kind === 'join-request') return JOIN_REQ_TYPE.joinRequest;
  return p.rejoinType === 0 ? JOIN_REQ_TYPE.rejoin0 : p.rejoinType === 1 ? JOIN_REQ_TYPE.rejoin1 : JOIN_REQ_TYPE.rejoin2;
}

function drop(reason: DropReason, detail: string): DroppedJoin {
  return { accepted: false, reason, detail };
}

function hexByte(b: number | undefined): string {
  return b === undefined ? 'missing' : b.toString(16).padStart(2, '0').toUpperCase();
}
