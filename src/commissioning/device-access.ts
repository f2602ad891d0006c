import { type Eui64, eui64FromBeHex } from '../protocol/index.js';
import type { CommissioningStore, FoundDevice, Storage } from '../storage/storage.js';
import { type Caller, type Scope, isOperator, requireScope } from './caller.js';
import { CommissioningError } from './errors.js';
import { parseInput } from './parse-input.js';

/*
 * Which devices a caller may see: the operator all; an organisation the devices it owns, and the unclaimed stock of
 * its own makers. A device the caller may not see is answered exactly like one that does not exist, so the API never
 * tells whether a DevEUI is known here.
 */

export type CommissioningStorage = Storage & CommissioningStore;

export function parseDevEui(text: string, what = 'DevEUI'): Eui64 {
  return parseInput(() => eui64FromBeHex(text, what));
}

export const notFound = (devEui: string): CommissioningError => new CommissioningError('NOT_FOUND', `no device ${devEui}`);

export async function canSee(storage: CommissioningStorage, caller: Caller, found: FoundDevice): Promise<boolean> {
  if (isOperator(caller)) return true;
  const org = caller.organisation;
  if (org === null) return false;
  if (found.commissioning.owner === org) return true;
  if (found.commissioning.owner !== null || found.bound || found.commissioning.maker === null) return false;
  return (await storage.makerOrganisations()).get(found.commissioning.maker) === org;
}

/** The device if `caller` may see it (with `scope`), else NOT_FOUND. */
export async function visibleDevice(storage: CommissioningStorage, caller: Caller, devEuiText: string, scope: Scope): Promise<FoundDevice> {
  requireScope(caller, scope);
  const devEui = parseDevEui(devEuiText);
  const found = await storage.findDevice(devEui);
  if (found === undefined || !(await canSee(storage, caller, found))) throw notFound(devEui);
  return found;
}

/** The devices if `caller` owns every one of them (the operator: if each exists); else NOT_FOUND naming the first. */
export async function ownedDevices(storage: CommissioningStorage, caller: Caller, devEuiTexts: readonly string[], scope: Scope): Promise<FoundDevice[]> {
  requireScope(caller, scope);
  if (devEuiTexts.length === 0) throw new CommissioningError('INVALID_INPUT', 'name at least one device');
  if (devEuiTexts.length > 10_000) throw new CommissioningError('INVALID_INPUT', 'at most 10,000 devices at a time');
  const devEuis = devEuiTexts.map((d) => parseDevEui(d));
  if (new Set(devEuis).size !== devEuis.length) throw new CommissioningError('INVALID_INPUT', 'a DevEUI is named twice');
  const found: FoundDevice[] = [];
  for (const devEui of devEuis) {
    const f = await storage.findDevice(devEui);
    const owns = f !== undefined && (isOperator(caller) || (caller.organisation !== null && f.commissioning.owner === caller.organisation));
    if (!owns) throw notFound(devEui);
    found.push(f);
  }
  return found;
}
