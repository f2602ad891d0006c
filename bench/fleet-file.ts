import { createHmac, randomInt } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Eui64, type MacVersion, eui64FromBeHex } from '../src/protocol/index.js';
import { SimulatedDevice } from '../sim/device.js';
import type { DeviceState } from '../sim/device-state.js';
import { type MacMix, freshRandomNonces, nonceSources } from './fleet.js';
import type { Provisioned } from './provision.js';

/*
 * Provisioning thousands of devices through the CLI takes minutes, so a kept run directory (--keep) can be
 * measured again (--reuse DIR). The devices' root keys and counters are saved next to the data directory,
 * in secrets/ (0700), file mode 0600: they are the benchmark's throw-away test keys.
 */

interface SavedDevice {
  readonly identity: { devEui: string; joinEui: string; macVersion: MacVersion; appKey: string; nwkKey?: string };
  readonly state: DeviceState;
  /** Random DevNonces already sent (≤1.0.3 devices): the Join Server refuses their reuse. */
  readonly usedDevNonces?: number[];
}

interface SavedRun {
  readonly provisioned: Omit<Provisioned, 'nsKek' | 'asKek'> & { nsKek: { label: string; key: string }; asKek: { label: string; key: string } };
  readonly devices: readonly SavedDevice[];
  /** A fleet too large to list (bench/bulk-provision.ts): devices and root keys follow from a seed. */
  readonly seeded?: SeededFleet;
  /** Seeded fleets: the state of each device that has joined, by index. */
  readonly states?: Record<number, Omit<SavedDevice, 'identity'>>;
}

/**
 * A fleet of up to 1,000,000 devices described by a seed rather than listed: device i has DevEUI devEuiBase + i, LoRaWAN
 * 1.0.3 or 1.1 by `mix` (alternating for "mix"), and root keys HMAC-SHA256(seed, DevEUI "/AppKey" | "/NwkKey") cut to
 * 16 bytes. The maker side (bulk provisioning) and the device side (load generator) compute the same keys; the Join
 * Server holds them as production does, imported from sealed batches into custody. Throw-away benchmark keys only.
 */
export interface SeededFleet {
  readonly seed: string;
  readonly count: number;
  readonly devEuiBase: string;
  readonly joinEui: string;
  readonly mix: MacMix;
}

export interface SeededIdentity {
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly macVersion: MacVersion;
  readonly appKey: Buffer;
  readonly nwkKey?: Buffer;
}

export function seededDevice(f: SeededFleet, i: number): SeededIdentity {
  const devEui = eui64FromBeHex((BigInt(`0x${f.devEuiBase}`) + BigInt(i)).toString(16).toUpperCase().padStart(16, '0'));
  const macVersion: MacVersion = f.mix === 'mix' ? (i % 2 === 0 ? '1.0.3' : '1.1') : f.mix;
  const key = (name: string): Buffer => createHmac('sha256', Buffer.from(f.seed, 'hex')).update(`${devEui}/${name}`).digest().subarray(0, 16);
  return { devEui, joinEui: eui64FromBeHex(f.joinEui), macVersion, appKey: key('AppKey'), ...(macVersion === '1.1' ? { nwkKey: key('NwkKey') } : {}) };
}

export function saveSeededFleet(p: Provisioned, seeded: SeededFleet): void {
  const run: SavedRun = { provisioned: savedProvisioned(p), devices: [], seeded, states: {} };
  writeFileSync(fileOf(p.root), JSON.stringify(run), { mode: 0o600 });
}

const savedProvisioned = (p: Provisioned): SavedRun['provisioned'] => ({
  ...p, nsKek: { label: p.nsKek.label, key: p.nsKek.key.toString('hex') }, asKek: { label: p.asKek.label, key: p.asKek.key.toString('hex') },
});

/** `size` distinct indices out of 0..count-1, in random order (a partial Fisher–Yates shuffle). */
function sampleIndices(count: number, size: number): number[] {
  const a = new Uint32Array(count);
  for (let i = 0; i < count; i++) a[i] = i;
  const n = Math.min(size, count);
  for (let i = 0; i < n; i++) {
    const j = randomInt(i, count);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return Array.from(a.subarray(0, n));
}

const fileOf = (root: string): string => join(root, 'secrets', 'fleet.json');

export function saveFleet(p: Provisioned, fleet: readonly SimulatedDevice[]): void {
  const run: SavedRun = {
    provisioned: savedProvisioned(p),
    devices: fleet.map((d) => ({
      identity: {
        devEui: d.identity.devEui, joinEui: d.identity.joinEui, macVersion: d.identity.macVersion,
        appKey: d.identity.roots.appKey.toString('hex'),
        ...(d.identity.roots.nwkKey ? { nwkKey: d.identity.roots.nwkKey.toString('hex') } : {}),
      },
      state: d.state,
      usedDevNonces: [...(nonceSources.get(d.identity.devEui)?.used ?? [])],
    })),
  };
  writeFileSync(fileOf(p.root), JSON.stringify(run), { mode: 0o600 });
}

export interface LoadedFleet {
  readonly provisioned: Provisioned;
  readonly fleet: SimulatedDevice[];
  /** Writes the devices' states back (seeded fleets: merged into the states of earlier runs). */
  save(): void;
}

/**
 * Reads a saved fleet. `sample`: for a seeded fleet, only that many devices, picked at random over the whole fleet
 * (so the Join Server's look-ups spread over all its records, as a real fleet's do).
 */
export function loadFleet(root: string, options: { sample?: number | undefined } = {}): LoadedFleet {
  const run = JSON.parse(readFileSync(fileOf(root), 'utf8')) as SavedRun;
  const p = run.provisioned;
  const provisioned: Provisioned = { ...p, nsKek: { label: p.nsKek.label, key: Buffer.from(p.nsKek.key, 'hex') }, asKek: { label: p.asKek.label, key: Buffer.from(p.asKek.key, 'hex') } };
  const device = (identity: SimulatedDevice['identity'], saved: Omit<SavedDevice, 'identity'> | undefined): SimulatedDevice => {
    const nonces = freshRandomNonces(saved?.usedDevNonces ?? []);
    nonceSources.set(identity.devEui, nonces);
    return new SimulatedDevice(identity, saved?.state, { randomDevNonce: nonces });
  };
  const seeded = run.seeded;
  if (seeded !== undefined) {
    const states = run.states ?? {};
    const indices = options.sample === undefined || options.sample >= seeded.count ? Array.from({ length: seeded.count }, (_, i) => i) : sampleIndices(seeded.count, options.sample);
    const fleet = indices.map((i) => {
      const d = seededDevice(seeded, i);
      const roots = { appKey: d.appKey, ...(d.nwkKey ? { nwkKey: d.nwkKey } : {}) };
      return device({ devEui: d.devEui, joinEui: d.joinEui, macVersion: d.macVersion, roots } as SimulatedDevice['identity'], states[i]);
    });
    return {
      provisioned,
      fleet,
      save() {
        const merged = { ...states };
        fleet.forEach((d, j) => {
          const used = [...(nonceSources.get(d.identity.devEui)?.used ?? [])];
          if (d.state.nextDevNonce > 0 || used.length > 0) merged[indices[j]!] = { state: d.state, usedDevNonces: used };
        });
        writeFileSync(fileOf(p.root), JSON.stringify({ ...run, states: merged } satisfies SavedRun), { mode: 0o600 });
      },
    };
  }
  const fleet = run.devices.map((d) => {
    const i = d.identity;
    const roots = { appKey: Buffer.from(i.appKey, 'hex'), ...(i.nwkKey ? { nwkKey: Buffer.from(i.nwkKey, 'hex') } : {}) };
    return device({ devEui: i.devEui, joinEui: i.joinEui, macVersion: i.macVersion, roots } as SimulatedDevice['identity'], d);
  });
  return { provisioned, fleet, save: () => saveFleet(provisioned, fleet) };
}
