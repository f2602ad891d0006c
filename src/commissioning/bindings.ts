import type { KeyCustody } from '../custody/custody.js';
import { type Eui64, type NetId, eui64FromBeHex, netIdFromBeHex } from '../protocol/index.js';
import { claimCodeHash, generateClaimCode, groupClaimCode } from '../provisioning/sealed-batch/claim-codes.js';
import { StorageError } from '../storage/errors.js';
import type { AuditEvent, DeviceRecord, FoundDevice, OwnedBinding } from '../storage/storage.js';
import { type Caller, ownerScopeOf } from './caller.js';
import { type CommissioningStorage, notFound, ownedDevices } from './device-access.js';
import { CommissioningError } from './errors.js';
import { parseInput } from './parse-input.js';

/*
 * What an owner does with its devices (docs/commissioning.md): bind them to a home network and an application server
 * with an activation policy, unbind them, return them to the maker's stock, manage their claim code, and forget the
 * DevNonces of a device that lost its counter. Joins and HomeNSReq read the binding at the moment of the request.
 */

export interface BindingInput {
  readonly homeNetId: string;
  readonly homeNsId?: string | null | undefined;
  readonly asId?: string | null | undefined;
  /** KEK for the network's session keys; must be the KEK of one of the home network's registered servers. */
  readonly nsKekLabel?: string | null | undefined;
  /** KEK for the AppSKey; must be the registered application server's. */
  readonly asKekLabel?: string | null | undefined;
  /** Which visited networks may learn the home network via HomeNSReq (default: any network with an agreement). */
  readonly roaming?: 'home-only' | 'any-agreement' | readonly string[] | undefined;
}

export interface OwnerDeps {
  readonly storage: CommissioningStorage;
  readonly custody: KeyCustody;
  readonly now?: () => Date;
}

const at = (deps: OwnerDeps): Date => (deps.now ?? (() => new Date()))();


/** Storage refusing because ownership changed between our check and its transaction reads as "no such device". */
async function asOwner<T>(devEuis: readonly string[], f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (error) {
    if (error instanceof StorageError && error.code === 'NOT_OWNED') throw notFound(devEuis[0] ?? '?');
    throw error;
  }
}

/** A binding checked against the registered peers and custody, before anything changes. */
export async function parseBinding(deps: OwnerDeps, input: BindingInput): Promise<OwnedBinding> {
  const homeNetId = parseInput(() => netIdFromBeHex(input.homeNetId, 'homeNetId') as NetId);
  const homeNsId = input.homeNsId == null ? null : parseInput(() => eui64FromBeHex(input.homeNsId!, 'homeNsId'));
  const asId = input.asId == null || input.asId.trim() === '' ? null : input.asId.trim();
  const roaming = input.roaming ?? 'any-agreement';
  const roamingNetIds =
    roaming === 'any-agreement' ? null : roaming === 'home-only' ? [] : parseInput(() => [...new Set(roaming.map((n) => netIdFromBeHex(n, 'roaming') as NetId))]);
  const nsKekLabel = input.nsKekLabel ?? null;
  if (nsKekLabel !== null) {
    const servers = await deps.storage.findNetworkServers(homeNetId);
    if (!servers.some((s) => s.kekLabel === nsKekLabel) || !(await deps.custody.hasKek(nsKekLabel))) {
      throw new CommissioningError('INVALID_INPUT', `KEK "${nsKekLabel}" is not the KEK of a network server of ${homeNetId}`);
    }
  }
  const asKekLabel = input.asKekLabel ?? null;
  if (asKekLabel !== null) {
    const as = asId === null ? undefined : await deps.storage.findApplicationServer(asId);
    if (as === undefined || as.kekLabel !== asKekLabel || !(await deps.custody.hasKek(asKekLabel))) {
      throw new CommissioningError('INVALID_INPUT', `KEK "${asKekLabel}" is not the KEK of application server ${asId ?? '(none given)'}`);
    }
  }
  return { homeNetId, homeNsId, asId, roamingNetIds, nsKekLabel, asKekLabel };
}

const event = (caller: Caller, found: FoundDevice, action: string, when: Date, details: Record<string, unknown>): AuditEvent => ({
  at: when, actor: caller.actor, action, subject: `device/${found.device.devEui}`, outcome: 'success',
  organisation: found.commissioning.owner, details,
});

export async function bindDevices(deps: OwnerDeps, caller: Caller, devEuis: readonly string[], input: BindingInput): Promise<DeviceRecord[]> {
  const found = await ownedDevices(deps.storage, caller, devEuis, 'devices:bind');
  const binding = await parseBinding(deps, input);
  const when = at(deps);
  const details = { homeNetId: binding.homeNetId, homeNsId: binding.homeNsId, asId: binding.asId, roamingNetIds: binding.roamingNetIds, nsKekLabel: binding.nsKekLabel, asKekLabel: binding.asKekLabel };
  const audit = found.map((f) => event(caller, f, f.bound ? 'device.rebind' : 'device.bind', when, details));
  return asOwner(devEuis, () => deps.storage.bindOwnedDevices(ownerScopeOf(caller), found.map((f) => f.device.devEui), binding, when, audit));
}

export async function unbindDevices(deps: OwnerDeps, caller: Caller, devEuis: readonly string[]): Promise<void> {
  const found = await ownedDevices(deps.storage, caller, devEuis, 'devices:bind');
  const unbound = found.find((f) => !f.bound);
  if (unbound !== undefined) throw new CommissioningError('CONFLICT', `device ${unbound.device.devEui} is not bound`);
  const when = at(deps);
  await asOwner(devEuis, () => deps.storage.unbindOwnedDevices(ownerScopeOf(caller), found.map((f) => f.device.devEui), found.map((f) => event(caller, f, 'device.unbind', when, {}))));
}

/** Gives devices back to their maker's stock: unbound, unowned, claimable again with their current code. */
export async function unclaimDevices(deps: OwnerDeps, caller: Caller, devEuis: readonly string[]): Promise<void> {
  const found = await ownedDevices(deps.storage, caller, devEuis, 'devices:claim');
  const makerless = found.find((f) => f.commissioning.maker === null);
  if (makerless !== undefined) throw new CommissioningError('CONFLICT', `device ${makerless.device.devEui} came from no maker's batch: there is no stock to return it to`);
  const when = at(deps);
  await asOwner(devEuis, () => deps.storage.unclaimOwnedDevices(ownerScopeOf(caller), found.map((f) => f.device.devEui), found.map((f) => event(caller, f, 'device.unclaim', when, { wasBound: f.bound }))));
}

export interface ClaimSettingsInput {
  readonly locked?: boolean | undefined;
  /** New claim code, returned once. */
  readonly regenerate?: boolean | undefined;
  /** ISO date after which the code no longer claims; null = no limit. */
  readonly expiresAt?: string | null | undefined;
}

export async function updateClaimSettings(deps: OwnerDeps, caller: Caller, devEui: string, input: ClaimSettingsInput): Promise<{ locked: boolean; expiresAt: string | null; claimCode?: string }> {
  const [found] = await ownedDevices(deps.storage, caller, [devEui], 'devices:claim');
  const c = found!.commissioning;
  let expiresAt = c.claimExpiresAt;
  if (input.expiresAt !== undefined) {
    expiresAt = input.expiresAt === null ? null : new Date(input.expiresAt);
    if (expiresAt !== null && Number.isNaN(expiresAt.getTime())) throw new CommissioningError('INVALID_INPUT', 'expiresAt must be an ISO 8601 date-time');
  }
  const newCode = input.regenerate === true ? generateClaimCode() : undefined;
  const locked = input.locked ?? c.claimLocked;
  const id = found!.device.devEui;
  const when = at(deps);
  await asOwner([id], () =>
    deps.storage.updateClaim(ownerScopeOf(caller), id as Eui64, { claimCodeHash: newCode === undefined ? c.claimCodeHash : claimCodeHash(id, newCode), locked, expiresAt }, [
      event(caller, found!, 'device.claim-settings', when, { locked, regenerated: newCode !== undefined, expiresAt: expiresAt?.toISOString() ?? null }),
    ]),
  );
  return { locked, expiresAt: expiresAt?.toISOString() ?? null, ...(newCode === undefined ? {} : { claimCode: groupClaimCode(newCode) }) };
}

/** For a device that lost its DevNonce counter: forget the DevNonces seen. The JoinNonce continues (never reset). */
export async function resetDevNonces(deps: OwnerDeps, caller: Caller, devEui: string): Promise<void> {
  const [found] = await ownedDevices(deps.storage, caller, [devEui], 'devices:bind');
  const ok = await deps.storage.resetDevNonces(found!.device.devEui, [event(caller, found!, 'device.dev-nonce-reset', at(deps), {})]);
  if (!ok) throw notFound(devEui);
}

