import { randomBytes } from 'node:crypto';
import { type DevAddr, type MacVersion, devAddrFromLeBytes, isLoRaWAN11 } from '../src/protocol/index.js';
import type { ApplicationServerClient } from './application-server.js';
import type { JoinAcceptOutcome, SimulatedDevice } from './device.js';
import type { SessionKeys } from './device-keys.js';
import type { DeviceState } from './device-state.js';
import type { ActivationAnswer, Failure, NetworkServerClient, NsSessionKeys } from './network-server.js';

/*
 * One activation end to end, each party doing only its own part: the device builds the request and later
 * judges the accept; the NS wraps the frame in a JoinReq/RejoinReq and unwraps its keys; the AS unwraps
 * the AppSKey. Then compare what the device derived with what the Join Server delivered.
 */

export interface NetworkChoices {
  /** The NS's highest LoRaWAN version; the JoinReq carries min(device, network) (TS002-1.0 §8 step 3). */
  readonly networkMacVersion: MacVersion;
  readonly devAddr?: DevAddr | undefined;
  /** DLSettings without OptNeg; the NS sets OptNeg when it sends MACVersion 1.1. */
  readonly dlSettings: number;
  readonly rxDelay: number;
  readonly cfList?: Buffer | undefined;
}

export interface KeyComparison {
  readonly key: string;
  readonly holder: 'NS' | 'AS';
  readonly device: Buffer;
  readonly delivered: Buffer | undefined;
  /** undefined: not compared (that party's KEK not given, or the key is not in the answer). */
  readonly match: boolean | undefined;
  readonly note?: string;
}

export interface ActivationRun {
  readonly kind: 'join-request' | 'rejoin-request';
  readonly rejoinType?: 0 | 1 | 2;
  /** DevNonce, or RJcount for a rejoin. */
  readonly nonce: number;
  readonly macVersionSent: MacVersion;
  readonly devAddr: DevAddr;
  readonly answer: ActivationAnswer | Failure;
  readonly device: JoinAcceptOutcome | undefined;
  readonly comparisons: readonly KeyComparison[];
  readonly ok: boolean;
}

export async function runActivation(
  device: SimulatedDevice,
  ns: NetworkServerClient,
  as: ApplicationServerClient | undefined,
  choices: NetworkChoices,
  rejoinType?: 0 | 1 | 2,
  persist?: (state: DeviceState) => void,
): Promise<ActivationRun> {
  const { identity } = device;
  const macVersionSent: MacVersion = isLoRaWAN11(identity.macVersion) && isLoRaWAN11(choices.networkMacVersion) ? '1.1' : lower(identity.macVersion, choices.networkMacVersion);
  const phyPayload = rejoinType === undefined ? device.joinRequest() : device.rejoinRequest(rejoinType);
  // A device writes its counters to non-volatile memory before it transmits (LoRaWAN 1.0.4 §6.2.5).
  persist?.(device.state);
  const pending = device.pending!;
  const nonce = pending.kind === 'join-request' ? pending.devNonce : pending.rjCount;
  const devAddr = choices.devAddr ?? devAddrFromLeBytes(randomBytes(4));
  const request = {
    phyPayload,
    devEui: identity.devEui,
    joinEui: identity.joinEui,
    macVersion: macVersionSent,
    devAddr,
    dlSettings: isLoRaWAN11(macVersionSent) ? choices.dlSettings | 0x80 : choices.dlSettings & 0x7f,
    rxDelay: choices.rxDelay,
    cfList: choices.cfList,
  };
  const answer = rejoinType === undefined ? await ns.joinReq(request) : await ns.rejoinReq(request);
  const base = { kind: pending.kind, ...(rejoinType === undefined ? {} : { rejoinType }), nonce, macVersionSent, devAddr, answer };
  if (!answer.ok) return { ...base, device: undefined, comparisons: [], ok: false };

  const outcome = device.receiveJoinAccept(answer.phyPayload);
  if (outcome.accepted) persist?.(device.state);
  if (!outcome.accepted) return { ...base, device: outcome, comparisons: [], ok: false };

  const comparisons = compareKeys(outcome.keys, answer.nsKeys, as, answer.appSKeyEnvelope);
  if (outcome.devAddr !== devAddr) comparisons.push({ key: 'DevAddr', holder: 'NS', device: Buffer.from(outcome.devAddr, 'hex'), delivered: Buffer.from(devAddr, 'hex'), match: false, note: 'accept carries another DevAddr than the NS asked for' });
  const ok = comparisons.every((c) => c.match !== false);
  return { ...base, device: outcome, comparisons, ok };
}

function compareKeys(dev: SessionKeys, ns: NsSessionKeys, as: ApplicationServerClient | undefined, appSKeyEnvelope: unknown): KeyComparison[] {
  const out: KeyComparison[] = [];
  const pair = (key: string, device: Buffer, delivered: Buffer | undefined, holder: 'NS' | 'AS', note?: string): void => {
    out.push({ key, holder, device, delivered, match: delivered === undefined ? undefined : device.equals(delivered), ...(note ? { note } : {}) });
  };
  if (dev.scheme === 'legacy') {
    if (ns.scheme === 'legacy') pair('NwkSKey', dev.nwkSKey, ns.nwkSKey, 'NS');
    else out.push({ key: 'NwkSKey', holder: 'NS', device: dev.nwkSKey, delivered: undefined, match: false, note: 'device is in a 1.0 session, the Join Server delivered 1.1 keys' });
  } else if (ns.scheme === 'lorawan11') {
    pair('FNwkSIntKey', dev.fNwkSIntKey, ns.fNwkSIntKey, 'NS');
    pair('SNwkSIntKey', dev.sNwkSIntKey, ns.sNwkSIntKey, 'NS');
    pair('NwkSEncKey', dev.nwkSEncKey, ns.nwkSEncKey, 'NS');
  } else {
    out.push({ key: 'FNwkSIntKey', holder: 'NS', device: dev.fNwkSIntKey, delivered: undefined, match: false, note: 'device is in a 1.1 session, the Join Server delivered a 1.0 NwkSKey' });
  }
  if (as === undefined) pair('AppSKey', dev.appSKey, undefined, 'AS', 'no AS KEK given');
  else if (appSKeyEnvelope === undefined) pair('AppSKey', dev.appSKey, undefined, 'AS', 'not in the answer (SessionKeyID only)');
  else {
    const r = as.unwrapForwarded(appSKeyEnvelope);
    if (r.ok) pair('AppSKey', dev.appSKey, r.appSKey, 'AS', r.inClear ? 'delivered in clear' : 'JoinAns envelope');
    else out.push({ key: 'AppSKey', holder: 'AS', device: dev.appSKey, delivered: undefined, match: false, note: r.detail });
  }
  return out;
}

const ORDER: readonly MacVersion[] = ['1.0.0', '1.0.1', '1.0.2', '1.0.3', '1.0.4', '1.1'];

function lower(a: MacVersion, b: MacVersion): MacVersion {
  return ORDER.indexOf(a) <= ORDER.indexOf(b) ? a : b;
}
