import type { FoundDevice, SessionRecord } from '../storage/storage.js';

/*
 * What the API shows of a device: identity, ownership, claim state and binding. Never a key, and not even the custody
 * handles of its root keys (they are internal names, useless outside, but nobody needs them).
 */

export type RoamingPolicy = 'home-only' | 'any-agreement' | string[];

export interface DeviceView {
  readonly devEui: string;
  readonly joinEui: string;
  readonly macVersion: string;
  readonly owner: string | null;
  readonly maker: string | null;
  readonly batchId: string | null;
  readonly serialNumber: string | null;
  readonly profile: string | null;
  readonly claim: { readonly hasClaimCode: boolean; readonly locked: boolean; readonly expiresAt: string | null; readonly claimedAt: string | null };
  readonly binding: BindingView | null;
  readonly createdAt: string;
}

export interface BindingView {
  readonly homeNetId: string;
  readonly homeNsId: string | null;
  readonly asId: string | null;
  readonly roaming: RoamingPolicy;
  readonly nsKekLabel: string | null;
  readonly asKekLabel: string | null;
  readonly boundAt: string | null;
}

export interface ActivationView {
  readonly at: string;
  readonly sessionKeyId: string;
  readonly joinEui: string;
  readonly scheme: string;
  readonly joinNonce: number;
  readonly devNonce: number;
  readonly netId: string;
  readonly devAddr: string;
}

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString());

export function roamingPolicyOf(roamingNetIds: readonly string[] | null): RoamingPolicy {
  if (roamingNetIds === null) return 'any-agreement';
  return roamingNetIds.length === 0 ? 'home-only' : [...roamingNetIds];
}

export function deviceView(found: FoundDevice): DeviceView {
  const d = found.device;
  const c = found.commissioning;
  return {
    devEui: d.devEui,
    joinEui: d.joinEui,
    macVersion: d.macVersion,
    owner: c.owner,
    maker: c.maker,
    batchId: c.batchId,
    serialNumber: c.serialNumber,
    profile: c.profile,
    claim: { hasClaimCode: c.claimCodeHash !== null, locked: c.claimLocked, expiresAt: iso(c.claimExpiresAt), claimedAt: iso(c.claimedAt) },
    binding: found.bound
      ? {
          homeNetId: found.device.homeNetId,
          homeNsId: found.device.homeNsId,
          asId: found.device.asId,
          roaming: roamingPolicyOf(found.device.roamingNetIds),
          nsKekLabel: found.device.nsKekLabel ?? null,
          asKekLabel: found.device.asKekLabel ?? null,
          boundAt: iso(found.boundAt),
        }
      : null,
    createdAt: d.createdAt.toISOString(),
  };
}

export function activationView(s: SessionRecord): ActivationView {
  return {
    at: s.createdAt.toISOString(), sessionKeyId: s.sessionKeyId, joinEui: s.joinEui, scheme: s.scheme,
    joinNonce: s.joinNonce, devNonce: s.devNonce, netId: s.netId, devAddr: s.devAddr,
  };
}
