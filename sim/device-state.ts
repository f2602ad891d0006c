import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { DevAddr, Eui64, NetId } from '../src/protocol/index.js';

/**
 * What a LoRaWAN end device keeps in non-volatile memory between power cycles (LoRaWAN 1.0.4 §6.2.5,
 * 1.1 §6.2.4/§6.2.5): the DevNonce counter, the last JoinNonce it accepted, RJcount1, and the session it
 * is in (so a later run can send a type 0/2 Rejoin-request, which is MACed with the session's SNwkSIntKey).
 */
export interface DeviceState {
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  /** Next DevNonce of a 1.0.4/1.1 device: starts at 0, +1 per Join-request, never reused. */
  readonly nextDevNonce: number;
  /** Last JoinNonce accepted; devices start from 0 (LoRaMac-node). */
  readonly lastJoinNonce: number;
  /** Next RJcount1 (1.1): +1 per type-1 Rejoin-request, persisted, not reset by a Join-accept. */
  readonly nextRjCount1: number;
  /** Next RJcount0 (1.1): +1 per type 0/2 Rejoin-request, reset to 0 by every accepted Join-accept. */
  readonly nextRjCount0: number;
  readonly session: DeviceSession | null;
}

export interface DeviceSession {
  readonly scheme: 'legacy' | 'lorawan11';
  readonly netId: NetId;
  readonly devAddr: DevAddr;
  readonly joinNonce: number;
  /** Hex; the state file is written with mode 0600. */
  readonly keys: Readonly<Record<string, string>>;
}

export function initialDeviceState(devEui: Eui64, joinEui: Eui64): DeviceState {
  return { devEui, joinEui, nextDevNonce: 0, lastJoinNonce: 0, nextRjCount1: 0, nextRjCount0: 0, session: null };
}

export class DeviceStateError extends Error {
  override readonly name = 'DeviceStateError';
}

/** Loads the state file, or a factory-fresh state when the file does not exist yet. */
export function loadDeviceState(path: string, devEui: Eui64, joinEui: Eui64): DeviceState {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return initialDeviceState(devEui, joinEui);
    throw e;
  }
  const s = JSON.parse(text) as DeviceState;
  if (s.devEui !== devEui || s.joinEui !== joinEui) {
    throw new DeviceStateError(`state file ${path} belongs to DevEUI ${s.devEui} / JoinEUI ${s.joinEui}, not ${devEui} / ${joinEui}`);
  }
  for (const f of ['nextDevNonce', 'lastJoinNonce', 'nextRjCount1', 'nextRjCount0'] as const) {
    if (!Number.isInteger(s[f]) || s[f] < 0) throw new DeviceStateError(`state file ${path}: ${f} is not a counter`);
  }
  return s;
}

/** Atomic replace (write, then rename), so a crash never leaves a half-written counter. */
export function saveDeviceState(path: string, state: DeviceState): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}
