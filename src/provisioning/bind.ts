import { type Eui64, type NetId, ProtocolError, eui64FromBeHex, netIdFromBeHex } from '../protocol/index.js';
import type { DeviceBinding, DeviceRecord, Storage } from '../storage/storage.js';
import { ProvisioningError } from './errors.js';

/*
 * The operator binds devices of the inventory (imported from sealed batches) to a home network and an application
 * server, which makes them activatable. Their keys stay where they are: only the records move. Buyers claiming their
 * own devices (claim codes, TR005) is commissioning's; this is the operator's direct path.
 */

export interface BindInput {
  /** DevEUIs to bind, or every device still in the inventory of `batchId`. */
  readonly devEuis?: readonly string[] | undefined;
  readonly batchId?: string | undefined;
  readonly homeNetId: string;
  readonly homeNsId?: string | undefined;
  readonly asId?: string | undefined;
  readonly roamingNetIds?: readonly string[] | undefined;
}

export async function bindInventoryDevices(deps: { storage: Storage; actor: string; now?: () => Date }, input: BindInput): Promise<DeviceRecord[]> {
  const binding = parseBinding(input);
  if ((input.devEuis === undefined) === (input.batchId === undefined)) throw new ProvisioningError('INVALID_INPUT', 'give either DevEUIs or a batch id');
  let devEuis: Eui64[];
  if (input.devEuis !== undefined) {
    devEuis = input.devEuis.map((d) => parse(() => eui64FromBeHex(d, '--dev-eui')));
    if (new Set(devEuis).size !== devEuis.length) throw new ProvisioningError('INVALID_INPUT', 'a DevEUI is given twice');
  } else {
    devEuis = [];
    for (let after: string | undefined; ; ) {
      const page = await deps.storage.listInventory({ batchId: input.batchId!, limit: 1000, ...(after === undefined ? {} : { after }) });
      devEuis.push(...page.items.map((d) => d.devEui));
      if (page.next === undefined) break;
      after = page.next;
    }
    if (devEuis.length === 0) throw new ProvisioningError('INVALID_INPUT', `batch ${input.batchId} has no device left in the inventory`);
  }
  if (devEuis.length === 0) throw new ProvisioningError('INVALID_INPUT', 'no device to bind');
  const at = (deps.now ?? (() => new Date()))();
  const audit = devEuis.map((devEui) => ({
    at,
    actor: deps.actor,
    action: 'device.bind',
    subject: `device/${devEui}`,
    outcome: 'success',
    details: { homeNetId: binding.homeNetId, homeNsId: binding.homeNsId, asId: binding.asId, roamingNetIds: binding.roamingNetIds },
  }));
  return deps.storage.bindInventoryDevices(devEuis, binding, audit);
}

function parseBinding(input: BindInput): DeviceBinding {
  const asId = input.asId?.trim();
  return {
    homeNetId: parse(() => netIdFromBeHex(input.homeNetId, '--home-net-id') as NetId),
    homeNsId: input.homeNsId === undefined ? null : parse(() => eui64FromBeHex(input.homeNsId!, '--home-ns-id')),
    asId: asId === undefined || asId === '' ? null : asId,
    roamingNetIds: input.roamingNetIds === undefined ? null : input.roamingNetIds.map((n) => parse(() => netIdFromBeHex(n, '--roaming-net-ids'))),
  };
}

function parse<T>(f: () => T): T {
  try {
    return f();
  } catch (error) {
    if (error instanceof ProtocolError) throw new ProvisioningError('INVALID_INPUT', error.message);
    throw error;
  }
}
