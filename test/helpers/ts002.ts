import { aes128EcbEncrypt, aesCmac } from '../../src/custody/primitives.js';
import { type Eui64, encodeJoinRequestMicInput, encodeRejoinRequestMicInput, lifetimeKeyBlock, type NetId } from '../../src/protocol/index.js';

/** Builders for TS002 requests as a network server or application server sends them. */

export interface JoinReqOptions {
  readonly phy: Buffer | string;
  readonly devEui: string;
  readonly joinEui: string;
  readonly macVersion?: string;
  readonly netId?: string;
  readonly protocolVersion?: '1.0' | '1.1';
  readonly messageType?: 'JoinReq' | 'RejoinReq';
  readonly dlSettings?: string;
  readonly rxDelay?: number;
  readonly devAddr?: string;
  readonly transactionId?: number;
  readonly cfList?: string;
  readonly senderNsId?: string;
  readonly senderToken?: string;
}

export function joinReq(o: JoinReqOptions): Record<string, unknown> {
  const m: Record<string, unknown> = {
    ProtocolVersion: o.protocolVersion ?? '1.0',
    SenderID: o.netId ?? '000013',
    ReceiverID: o.joinEui,
    TransactionID: o.transactionId ?? 1,
    MessageType: o.messageType ?? 'JoinReq',
    MACVersion: o.macVersion ?? '1.0.3',
    PHYPayload: typeof o.phy === 'string' ? o.phy : o.phy.toString('hex').toUpperCase(),
    DevEUI: o.devEui,
    DevAddr: o.devAddr ?? '26011A2B',
    DLSettings: o.dlSettings ?? '03',
    RxDelay: o.rxDelay ?? 1,
  };
  if (o.cfList !== undefined) m['CFList'] = o.cfList;
  if (o.senderNsId !== undefined) m['SenderNSID'] = o.senderNsId;
  if (o.senderToken !== undefined) m['SenderToken'] = o.senderToken;
  return m;
}

export function appSKeyReq(o: { devEui: string; joinEui: string; sessionKeyId: string; asId?: string; protocolVersion?: '1.0' | '1.1' }): Record<string, unknown> {
  return {
    ProtocolVersion: o.protocolVersion ?? '1.0',
    SenderID: o.asId ?? 'as-1',
    ReceiverID: o.joinEui,
    TransactionID: 7,
    MessageType: 'AppSKeyReq',
    DevEUI: o.devEui,
    SessionKeyID: o.sessionKeyId,
  };
}

export function homeNsReq(o: { devEui: string; joinEui: string; netId?: string; protocolVersion?: '1.0' | '1.1' }): Record<string, unknown> {
  return { ProtocolVersion: o.protocolVersion ?? '1.0', SenderID: o.netId ?? '000042', ReceiverID: o.joinEui, TransactionID: 9, MessageType: 'HomeNSReq', DevEUI: o.devEui };
}

/** A Join-request MACed with `key` (AppKey for 1.0.x, NwkKey for 1.1). */
export function joinRequestFrame(key: Buffer, devEui: string, joinEui: string, devNonce: number): Buffer {
  const input = encodeJoinRequestMicInput({ joinEui: joinEui as Eui64, devEui: devEui as Eui64, devNonce });
  return Buffer.concat([input, aesCmac(key, input).subarray(0, 4)]);
}

export function rejoin02Frame(sNwkSIntKey: Buffer, rejoinType: 0 | 2, netId: string, devEui: string, rjCount0: number): Buffer {
  const input = encodeRejoinRequestMicInput({ rejoinType, netId: netId as NetId, devEui: devEui as Eui64, rjCount0 });
  return Buffer.concat([input, aesCmac(sNwkSIntKey, input).subarray(0, 4)]);
}

/** A type 1 Rejoin-request, MACed with the JSIntKey derived from `nwkKey` (LoRaWAN 1.1 §6.2.4.2). */
export function rejoin1Frame(nwkKey: Buffer, devEui: string, joinEui: string, rjCount1: number): Buffer {
  const input = encodeRejoinRequestMicInput({ rejoinType: 1, joinEui: joinEui as Eui64, devEui: devEui as Eui64, rjCount1 });
  const jsIntKey = aes128EcbEncrypt(nwkKey, lifetimeKeyBlock('JSIntKey', devEui as Eui64));
  return Buffer.concat([input, aesCmac(jsIntKey, input).subarray(0, 4)]);
}

export function resultCode(answer: Record<string, any>): string {
  return answer['Result']?.['ResultCode'];
}
