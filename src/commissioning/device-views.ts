import type { AuditEvent, FoundDevice, SessionRecord } from '../storage/storage.js';

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

/** One activation attempt: an accepted Join/Rejoin (a session) or a refusal of a known device, newest first. */
export interface ActivationView {
  readonly at: string;
  readonly outcome: 'accepted' | 'refused';
  /** `Success`, or why it was refused (MIC_FAILED, DEV_NONCE_REPLAYED, ACTIVATION_DISALLOWED, …). */
  readonly result: string;
  readonly description: string | null;
  /** The network server that asked (refusals), e.g. `ns/000013`. */
  readonly sender: string | null;
  readonly sessionKeyId: string | null;
  readonly joinEui: string | null;
  readonly scheme: string | null;
  readonly joinNonce: number | null;
  readonly devNonce: number | null;
  readonly netId: string | null;
  readonly devAddr: string | null;
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
    at: s.createdAt.toISOString(), outcome: 'accepted', result: 'Success', description: null, sender: null, sessionKeyId: s.sessionKeyId, joinEui: s.joinEui,
    scheme: s.scheme, joinNonce: s.joinNonce, devNonce: s.devNonce, netId: s.netId, devAddr: s.devAddr,
  };
}

export function refusalView(e: AuditEvent): ActivationView {
  const reason = e.details['reason'];
  return {
    at: e.at.toISOString(), outcome: 'refused', result: e.outcome, description: typeof reason === 'string' ? reason : null, sender: e.actor,
    sessionKeyId: null, joinEui: null, scheme: null, joinNonce: null, devNonce: null, netId: null, devAddr: null,
  };
}
