import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MacVersion } from '../src/protocol/index.js';
import { SimulatedDevice } from '../sim/device.js';
import type { DeviceState } from '../sim/device-state.js';
import { freshRandomNonces, nonceSources } from './fleet.js';
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
}

const fileOf = (root: string): string => join(root, 'secrets', 'fleet.json');

export function saveFleet(p: Provisioned, fleet: readonly SimulatedDevice[]): void {
  const run: SavedRun = {
    provisioned: { ...p, nsKek: { label: p.nsKek.label, key: p.nsKek.key.toString('hex') }, asKek: { label: p.asKek.label, key: p.asKek.key.toString('hex') } },
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

export function loadFleet(root: string): { provisioned: Provisioned; fleet: SimulatedDevice[] } {
  const run = JSON.parse(readFileSync(fileOf(root), 'utf8')) as SavedRun;
  const p = run.provisioned;
  const fleet = run.devices.map((d) => {
    const i = d.identity;
    const roots = { appKey: Buffer.from(i.appKey, 'hex'), ...(i.nwkKey ? { nwkKey: Buffer.from(i.nwkKey, 'hex') } : {}) };
    const nonces = freshRandomNonces(d.usedDevNonces ?? []);
    nonceSources.set(i.devEui, nonces);
    return new SimulatedDevice({ devEui: i.devEui, joinEui: i.joinEui, macVersion: i.macVersion, roots } as SimulatedDevice['identity'], d.state, { randomDevNonce: nonces });
  });
  return {
    provisioned: { ...p, nsKek: { label: p.nsKek.label, key: Buffer.from(p.nsKek.key, 'hex') }, asKek: { label: p.asKek.label, key: Buffer.from(p.asKek.key, 'hex') } },
    fleet,
  };
}
