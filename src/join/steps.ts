import type { ExportedKey, KeyCustody, KeyDestination, KeyRef, SessionKeyRequest } from '../custody/custody.js';
import {
  type Eui64,
  type JoinReqMessage,
  type JoinReqType,
  MAX_JOIN_NONCE,
  assembleJoinAccept,
  encodeJoinAcceptBody,
  nextJoinNonce,
  withOptNeg,
  eui64FromBeHex,
  joinAcceptMicInput11,
  joinAcceptMicInputLegacy,
  legacySessionKeyBlock,
  lorawan11SessionKeyBlock,
  type NetId,
} from '../protocol/index.js';
import type { AuditEvent, DeviceRecord, JoinState, PeerRecord, SeenJoinState, SessionRecord } from '../storage/storage.js';
import type { Activation } from './activation.js';
import type { JoinContext } from './context.js';
import { JoinError } from './errors.js';
import { destinationFor } from './key-delivery.js';
import type { SessionPlan } from './session-plan.js';

/** ReceiverID of a request to the Join Server is a JoinEUI (TS002-1.0 §22.1). */
export function receiverJoinEui(receiverId: string): Eui64 {
  try {
    return eui64FromBeHex(receiverId, 'ReceiverID');
  } catch {
    throw new JoinError('UNKNOWN_RECEIVER', `ReceiverID ${JSON.stringify(receiverId)} is not a JoinEUI served here`);
  }
}

/**
 * Loads the device a request is about. A device is looked up by DevEUI and must be provisioned under the
 * JoinEUI the request names (TS002-1.0 §8 step 4: a 1.0 device's AppEUI need not identify a Join Server,
 * so provisioning decides what is served). A JoinEUI with no device at all is not ours: UnknownReceiver.
 */
export async function loadDevice(ctx: JoinContext, devEui: Eui64, joinEui: Eui64): Promise<DeviceRecord> {
  const device = await ctx.storage.getDevice(devEui);
  if (device !== undefined && device.joinEui === joinEui) return device;
  return notServed(ctx, devEui, joinEui);
}

/**
 * loadDevice for an activation: also the device's join state as read with it, which reserveJoin may decide on
 * instead of reading it again (it writes only if that state is still current).
 */
export async function loadDeviceForJoin(ctx: JoinContext, devEui: Eui64, joinEui: Eui64): Promise<{ device: DeviceRecord; seen: SeenJoinState }> {
  const found = await ctx.storage.getDeviceForJoin(devEui);
  if (found !== undefined && found.device.joinEui === joinEui) return found;
  return notServed(ctx, devEui, joinEui);
}

/** A JoinEUI with no device at all is not ours (UnknownReceiver); one we serve, without this device: UnknownDevice. */
async function notServed(ctx: JoinContext, devEui: Eui64, joinEui: Eui64): Promise<never> {
  if (!(await ctx.storage.servesJoinEui(joinEui))) {
    throw new JoinError('UNKNOWN_RECEIVER', `JoinEUI ${joinEui} is not served by this Join Server`);
  }
  throw new JoinError('UNKNOWN_DEVICE', `no device ${devEui} under JoinEUI ${joinEui}`);
}

/** Only the device's home network may activate it; the JoinReq always comes from the home NS (spec-notes §2.5). */
export function authoriseHomeNetwork(device: DeviceRecord, caller: PeerRecord, senderNsId: Eui64 | undefined): void {
  if (caller.netId !== device.homeNetId) {
    throw new JoinError('ACTIVATION_DISALLOWED', `network ${caller.netId ?? '?'} is not the home network of device ${device.devEui}`);
  }
  const nsId = senderNsId ?? caller.nsId;
  if (device.homeNsId !== null && nsId !== null && nsId !== device.homeNsId) {
    throw new JoinError('ACTIVATION_DISALLOWED', `network server ${nsId} is not the home network server of device ${device.devEui}`);
  }
}

export interface KeyDestinations {
  readonly networkServer: KeyDestination;
  /** Absent when the device has no application server with a KEK: the AS then fetches the AppSKey by SessionKeyID. */
  readonly applicationServer?: KeyDestination | undefined;
}

export async function resolveKeyDestinations(ctx: JoinContext, device: DeviceRecord, caller: PeerRecord): Promise<KeyDestinations> {
  const networkServer = await destinationFor(ctx.custody, caller, 'network server', device.nsKekLabel ?? null);
  if (device.asId === null) return { networkServer };
  const as = await ctx.storage.findApplicationServer(device.asId);
  // The AppSKey travels through the network server, so it goes in a JoinAns only wrapped for the AS.
  const asKekLabel = device.asKekLabel ?? as?.kekLabel ?? null;
  if (as === undefined || asKekLabel === null || !(await ctx.custody.hasKek(asKekLabel))) return { networkServer };
  return { networkServer, applicationServer: { kekLabel: asKekLabel } };
}

export async function verifyMic(custody: KeyCustody, key: KeyRef, micInput: Uint8Array, mic: Uint8Array, frame: string): Promise<void> {
  if (!(await custody.verifyMic(key, micInput, mic))) throw new JoinError('MIC_FAILED', `${frame} MIC does not verify`);
}

export interface AcceptCrypto {
  readonly micKey: KeyRef;
  readonly encryptionKey: KeyRef;
  /** Present for a LoRaWAN 1.1 accept with OptNeg=1 (LoRaWAN 1.1 §6.2.3). */
  readonly mic11?: { readonly joinReqType: JoinReqType; readonly joinEui: Eui64; readonly devNonce: number } | undefined;
}

export type NetworkSessionKeys =
  | { readonly scheme: 'legacy'; readonly nwkSKey: ExportedKey }
  | { readonly scheme: 'lorawan11'; readonly fNwkSIntKey: ExportedKey; readonly sNwkSIntKey: ExportedKey; readonly nwkSEncKey: ExportedKey };

export interface IssuedKeys {
  readonly network: NetworkSessionKeys;
  readonly appSKey?: ExportedKey | undefined;
}

/**
 * The session keys of a join, each exported only to its party (spec-notes §1.7): the network keys, then the AppSKey
 * when the application server has a KEK.
 */
export function sessionKeyRequests(plan: SessionPlan, session: SessionRecord, to: KeyDestinations): SessionKeyRequest[] {
  const app = to.applicationServer;
  if (plan.scheme === 'legacy') {
    const input = { joinNonce: session.joinNonce, netId: session.netId, devNonce: session.devNonce };
    return [
      { root: plan.nwkRoot, block: legacySessionKeyBlock('NwkSKey', input), to: to.networkServer },
      ...(app ? [{ root: plan.appRoot, block: legacySessionKeyBlock('AppSKey', input), to: app }] : []),
    ];
  }
  const input = { joinNonce: session.joinNonce, joinEui: session.joinEui, devNonce: session.devNonce };
  return [
    ...(['FNwkSIntKey', 'SNwkSIntKey', 'NwkSEncKey'] as const).map((k) => ({ root: plan.nwkRoot, block: lorawan11SessionKeyBlock(k, input), to: to.networkServer })),
    ...(app ? [{ root: plan.appRoot, block: lorawan11SessionKeyBlock('AppSKey', input), to: app }] : []),
  ];
}

/** The exported keys of sessionKeyRequests, in its order, named. */
function issuedKeys(scheme: SessionPlan['scheme'], keys: readonly ExportedKey[]): IssuedKeys {
  if (scheme === 'legacy') return { network: { scheme, nwkSKey: keys[0]! }, appSKey: keys[1] };
  return { network: { scheme, fNwkSIntKey: keys[0]!, sNwkSIntKey: keys[1]!, nwkSEncKey: keys[2]! }, appSKey: keys[3] };
}

export function sessionRecord(
  ctx: JoinContext,
  device: DeviceRecord,
  fields: { scheme: 'legacy' | 'lorawan11'; joinNonce: number; devNonce: number; netId: NetId; devAddr: SessionRecord['devAddr'] },
): SessionRecord {
  return { sessionKeyId: ctx.newSessionKeyId(), devEui: device.devEui, joinEui: device.joinEui, createdAt: ctx.now(), ...fields };
}

/** The JoinNonce for this answer, or the refusal once the 24-bit counter is spent (it never wraps). */
export function reserveJoinNonce(device: DeviceRecord, current: JoinState): number | JoinError {
  if (current.lastJoinNonce >= MAX_JOIN_NONCE) {
    return new JoinError('JOIN_NONCE_EXHAUSTED', `JoinNonce of device ${device.devEui} would exceed 2^24-1; the device needs new root keys or a new JoinEUI`);
  }
  return nextJoinNonce(current.lastJoinNonce);
}

/** The audit event committed with an accepted Join-/Rejoin-request: identifiers and counters, never keys. */
export function acceptAudit(caller: PeerRecord, session: SessionRecord, action: 'join.accept' | 'rejoin.accept', details: Record<string, unknown>): AuditEvent {
  return {
    at: session.createdAt,
    actor: caller.id,
    action,
    subject: `device/${session.devEui}`,
    outcome: 'Success',
    details: { joinEui: session.joinEui, joinNonce: session.joinNonce, netId: session.netId, devAddr: session.devAddr, sessionKeyId: session.sessionKeyId, ...details },
  };
}

/**
 * After the nonces are committed: the Join-accept (OptNeg set to match the derivation, spec-notes §1.8), its MIC
 * and encryption in custody, then the session keys for the network and application servers — one custody call.
 */
export async function completeActivation(
  ctx: JoinContext,
  msg: JoinReqMessage,
  session: SessionRecord,
  plan: SessionPlan,
  destinations: KeyDestinations,
  crypto: AcceptCrypto,
): Promise<Activation> {
  const body = encodeJoinAcceptBody({
    joinNonce: session.joinNonce,
    netId: session.netId,
    devAddr: session.devAddr,
    dlSettings: withOptNeg(msg.dlSettings, plan.scheme === 'lorawan11'),
    rxDelay: msg.rxDelay,
    cfList: msg.cfList,
  });
  const micInput = crypto.mic11 ? joinAcceptMicInput11(crypto.mic11, body) : joinAcceptMicInputLegacy(body);
  const done = await ctx.custody.completeJoin({ micKey: crypto.micKey, micInput, encryptionKey: crypto.encryptionKey, body }, sessionKeyRequests(plan, session, destinations));
  const keys = issuedKeys(plan.scheme, done.keys);
  return { phyPayload: assembleJoinAccept(done.encrypted), lifetime: ctx.settings.sessionLifetimeSeconds, sessionKeyId: session.sessionKeyId, joinNonce: session.joinNonce, ...keys };
}
