import type { DevAddr } from '../dev-addr.js';
import type { Eui64 } from '../eui64.js';
import type { MacVersion } from '../mac-version.js';
import type { NetId } from '../net-id.js';

export const protocolVersions = ['1.0', '1.1'] as const;
export type ProtocolVersion = (typeof protocolVersions)[number];

/** Message types the Join Server answers, and the answer type of each (TS002-1.0 §22.2). */
export const answerTypeOf = {
  JoinReq: 'JoinAns',
  RejoinReq: 'RejoinAns',
  AppSKeyReq: 'AppSKeyAns',
  HomeNSReq: 'HomeNSAns',
} as const;
export type RequestType = keyof typeof answerTypeOf;

/** A request header as we hold it after liberal parsing. */
export interface RequestHeader {
  readonly protocolVersion: ProtocolVersion;
  /** As received, trimmed; a NetID for an NS, an AS-ID (free text) for an AS. */
  readonly senderId: string;
  readonly receiverId: string;
  readonly transactionId: number;
  readonly messageType: string;
  readonly senderToken?: string | undefined;
  readonly senderNsId?: Eui64 | undefined;
}

export interface JoinReqMessage {
  readonly header: RequestHeader;
  readonly macVersion: MacVersion;
  readonly phyPayload: Buffer;
  readonly devEui: Eui64;
  readonly devAddr: DevAddr;
  readonly dlSettings: number;
  readonly rxDelay: number;
  readonly cfList?: Buffer | undefined;
}

/** RejoinReq carries exactly the JoinReq fields (TS002-1.0 §15). */
export type RejoinReqMessage = JoinReqMessage;

export interface AppSKeyReqMessage {
  readonly header: RequestHeader;
  readonly devEui: Eui64;
  /** Canonical upper-case hex. */
  readonly sessionKeyId: string;
}

export interface HomeNsReqMessage {
  readonly header: RequestHeader;
  readonly devEui: Eui64;
}

/** TS002 KeyEnvelope (§21.2). An empty or absent KEKLabel means the key is in clear. */
export interface KeyEnvelopeJson {
  readonly KEKLabel: string;
  readonly AESKey: string;
}

export interface ResultJson {
  readonly ResultCode: string;
  readonly Description?: string;
}

export type { NetId };
