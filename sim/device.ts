import { randomInt } from 'node:crypto';
import { aesCmac } from '../src/custody/primitives.js';
import {
  type Eui64,
  type MacVersion,
  encodeJoinRequestMicInput,
  encodeRejoinRequestMicInput,
  isLoRaWAN11,
  usesDevNonceCounter,
} from '../src/protocol/index.js';
import { type JoinAcceptOutcome, type PendingRequest, processJoinAccept } from './device-accept.js';
import { DeviceError } from './device-errors.js';
import { type RootKeys, jsIntKey, sessionKeysToHex } from './device-keys.js';
import { type DeviceState, initialDeviceState } from './device-state.js';

/*
 * A LoRaWAN end device (1.0.0–1.0.4, 1.1) as far as activation goes: it owns its root keys and its
 * non-volatile counters, builds Join-requests and Rejoin-requests, and accepts or drops Join-accepts.
 * State changes are returned through `state`; the caller persists them (a device persists the DevNonce
 * counter before transmitting, so a request built here is already "spent").
 */

export interface DeviceIdentity {
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly macVersion: MacVersion;
  readonly roots: RootKeys;
}

export interface DeviceOptions {
  /** Random DevNonce source for ≤1.0.3 devices; tests inject fixed values. */
  readonly randomDevNonce?: () => number;
}

export type { JoinAcceptOutcome, PendingRequest };

/**
 * A random DevNonce source for a ≤1.0.3 device that never repeats itself, for tests whose refusals must come from
 * what they test and not from a chance repeat (a real device may repeat; the Join Server then refuses a replay).
 */
export function uniqueRandomDevNonces(): () => number {
  const used = new Set<number>();
  return () => {
    let n: number;
    do n = randomInt(0, 0x10000); while (used.has(n));
    used.add(n);
    return n;
  };
}

export class SimulatedDevice {
  #state: DeviceState;
  #pending: PendingRequest | null = null;
  readonly #randomDevNonce: () => number;

  constructor(readonly identity: DeviceIdentity, state?: DeviceState, options: DeviceOptions = {}) {
    const lorawan11 = isLoRaWAN11(identity.macVersion);
    if (lorawan11 && identity.roots.nwkKey === undefined) throw new DeviceError('MISSING_NWK_KEY', 'a LoRaWAN 1.1 device has an NwkKey and an AppKey');
    if (!lorawan11 && identity.roots.nwkKey !== undefined) throw new DeviceError('UNEXPECTED_NWK_KEY', 'a LoRaWAN 1.0.x device has only an AppKey');
    this.#state = state ?? initialDeviceState(identity.devEui, identity.joinEui);
    this.#randomDevNonce = options.randomDevNonce ?? (() => randomInt(0, 0x10000));
  }

  get state(): DeviceState {
    return this.#state;
  }

  get pending(): PendingRequest | null {
    return this.#pending;
  }

  /**
   * Join-request PHYPayload. DevNonce: random for ≤1.0.3 (1.0.3 §6.2.4); a persisted counter from 0 for
   * 1.0.4 and 1.1 (1.0.4 §6.2.5), MIC under AppKey (1.0.x) or NwkKey (1.1, whatever the network supports).
   */
  joinRequest(): Buffer {
    const { devEui, joinEui, macVersion, roots } = this.identity;
    let devNonce: number;
    if (usesDevNonceCounter(macVersion)) {
      devNonce = this.#state.nextDevNonce;
      if (devNonce > 0xffff) throw new DeviceError('DEV_NONCE_EXHAUSTED', 'DevNonce counter exhausted: the device needs a new JoinEUI');
      this.#state = { ...this.#state, nextDevNonce: devNonce + 1 };
    } else {
      devNonce = this.#randomDevNonce();
    }
    const micInput = encodeJoinRequestMicInput({ joinEui, devEui, devNonce });
    const micKey = isLoRaWAN11(macVersion) ? roots.nwkKey! : roots.appKey;
    this.#pending = { kind: 'join-request', devNonce };
    return Buffer.concat([micInput, aesCmac(micKey, micInput).subarray(0, 4)]);
  }

  /**
   * Rejoin-request (LoRaWAN 1.1 §6.2.4). Types 0 and 2 carry the session's NetID and RJcount0 and are MACed
   * with SNwkSIntKey; type 1 carries JoinEUI and RJcount1 and is MACed with JSIntKey.
   */
  rejoinRequest(rejoinType: 0 | 1 | 2): Buffer {
    const { devEui, joinEui, macVersion, roots } = this.identity;
    if (!isLoRaWAN11(macVersion)) throw new DeviceError('REJOIN_NEEDS_LORAWAN_11', 'Rejoin-requests exist only in LoRaWAN 1.1');
    // A device rejoins only from a session on a 1.1 network (OptNeg=1); on a 1.0 network it behaves as a
    // 1.0 device, which has no Rejoin-request (LoRaWAN 1.1 §6.2.3, OptNeg).
    const session = this.#state.session;
    if (session === null) throw new DeviceError('REJOIN_NEEDS_SESSION', `a type ${rejoinType} Rejoin-request needs an active session`);
    if (session.scheme !== 'lorawan11') {
      throw new DeviceError('REJOIN_NEEDS_LORAWAN_11_SESSION', 'the device joined a LoRaWAN 1.0 network (OptNeg=0) and must not send Rejoin-requests');
    }
    if (rejoinType === 1) {
      const rjCount1 = this.#state.nextRjCount1;
      if (rjCount1 > 0xffff) throw new DeviceError('RJCOUNT_EXHAUSTED', 'RJcount1 must never wrap for a JoinEUI');
      this.#state = { ...this.#state, nextRjCount1: rjCount1 + 1 };
      const micInput = encodeRejoinRequestMicInput({ rejoinType, joinEui, devEui, rjCount1 });
      this.#pending = { kind: 'rejoin-request', rejoinType, rjCount: rjCount1 };
      return Buffer.concat([micInput, aesCmac(jsIntKey(roots.nwkKey!, devEui), micInput).subarray(0, 4)]);
    }
    const rjCount0 = this.#state.nextRjCount0;
    // LoRaWAN 1.1 §6.2.4.1: the device stops sending type 0/2 rejoins when RJcount0 would wrap.
    if (rjCount0 > 0xffff) throw new DeviceError('RJCOUNT_EXHAUSTED', 'RJcount0 reached 2^16-1');
    this.#state = { ...this.#state, nextRjCount0: rjCount0 + 1 };
    const micInput = encodeRejoinRequestMicInput({ rejoinType, netId: session.netId, devEui, rjCount0 });
    const sNwkSIntKey = Buffer.from(session.keys['sNwkSIntKey'] ?? '', 'hex');
    this.#pending = { kind: 'rejoin-request', rejoinType, rjCount: rjCount0 };
    return Buffer.concat([micInput, aesCmac(sNwkSIntKey, micInput).subarray(0, 4)]);
  }

  /**
   * Processes a Join-accept against the pending request; on acceptance the new session replaces the old one.
   * `answering`: the request the accept answers, when it is not the last one built (a load generator builds a
   * device's requests ahead of time and checks each accept against the request that was sent).
   */
  receiveJoinAccept(phy: Uint8Array, answering: PendingRequest | null = this.#pending): JoinAcceptOutcome {
    const { devEui, joinEui, macVersion, roots } = this.identity;
    const outcome = processJoinAccept({ macVersion, roots, devEui, joinEui, lastJoinNonce: this.#state.lastJoinNonce, pending: answering }, phy);
    if (!outcome.accepted) return outcome;
    if (answering === this.#pending) this.#pending = null;
    this.#state = {
      ...this.#state,
      lastJoinNonce: outcome.joinNonce,
      // LoRaWAN 1.1 §6.2.4.1 (LoRaMac-node): RJcount0 restarts at 0 with every new session context.
      nextRjCount0: 0,
      session: {
        scheme: outcome.keys.scheme,
        netId: outcome.netId,
        devAddr: outcome.devAddr,
        joinNonce: outcome.joinNonce,
        keys: sessionKeysToHex(outcome.keys),
      },
    };
    return outcome;
  }
}
