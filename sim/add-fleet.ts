import type { Joinkeep } from '../src/app/joinkeep.js';
import { addDevice } from '../src/provisioning/devices.js';
import type { SimulatedDevice } from './device.js';
import { type Kek, wrapEnvelope } from './key-envelope.js';

/**
 * Provisions simulated devices into an opened Joinkeep through the same service `joinkeep device add` calls, each
 * root key wrapped under the import KEK as a factory would send it; `parallelism` devices at a time.
 */
export async function addFleet(
  jk: Joinkeep,
  fleet: readonly SimulatedDevice[],
  o: { readonly importKek: Kek; readonly homeNetId: string; readonly asId: string; readonly actor: string; readonly parallelism: number; readonly progress?: (done: number) => void },
): Promise<void> {
  const deps = { storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: o.actor };
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < fleet.length) {
      const { devEui, joinEui, macVersion, roots } = fleet[next++]!.identity;
      await addDevice(deps, {
        devEui,
        joinEui,
        macVersion,
        homeNetId: o.homeNetId,
        asId: o.asId,
        appKey: JSON.stringify(wrapEnvelope(o.importKek, roots.appKey)),
        nwkKey: roots.nwkKey ? JSON.stringify(wrapEnvelope(o.importKek, roots.nwkKey)) : undefined,
      });
      o.progress?.(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.parallelism) }, worker));
}
