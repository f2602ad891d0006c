import { randomBytes, timingSafeEqual } from 'node:crypto';
import { type Eui64, ProtocolError, parseDeviceQr } from '../protocol/index.js';
import { claimCodeHash, generateClaimCode, groupClaimCode, normalizeClaimCode } from '../provisioning/sealed-batch/claim-codes.js';
import { ProvisioningError } from '../provisioning/errors.js';
import type { AuditEvent, FoundDevice } from '../storage/storage.js';
import { type Caller, requireScope } from './caller.js';
import { type CommissioningStorage, parseDevEui } from './device-access.js';
import { CommissioningError } from './errors.js';
import type { FailureLimiter } from './rate-limit.js';

/*
 * Claiming (docs/commissioning.md): a buyer proves possession of a device's claim code (the TR005 OwnerToken) and
 * becomes its owner. Every failure — unknown DevEUI, wrong or expired code, locked device, device without a code —
 * is the same CLAIM_FAILED, computed over the same work (a hash and a constant-time comparison against a stand-in
 * when there is nothing to compare with), and counted against the caller's failure budget.
 */

export interface ClaimInput {
  readonly devEui?: string | undefined;
  readonly claimCode?: string | undefined;
  /** A TR005 QR code (`LW:D0:…`, or an older draft format); its OwnerToken is the claim code. */
  readonly qrCode?: string | undefined;
  /** Nobody can claim the device away with its code afterwards (default true). */
  readonly lock?: boolean | undefined;
  /** Replace the claim code with a new one, returned once (default false). */
  readonly regenerate?: boolean | undefined;
}

export interface ClaimOutcome {
  readonly devEui: string;
  readonly owner: string;
  readonly locked: boolean;
  /** The new claim code, grouped for printing, when `regenerate` was asked. Shown once; only its hash is kept. */
  readonly claimCode?: string;
}

export interface ClaimDeps {
  readonly storage: CommissioningStorage;
  readonly limiter: FailureLimiter;
  readonly now?: () => Date;
}

const CLAIM_FAILED = 'claim failed with the given claim code';
const STAND_IN = randomBytes(32).toString('hex');

/** What a claim names: the DevEUI and the normalised claim code, from either form. Malformed input is INVALID_INPUT. */
export function claimTarget(input: ClaimInput): { devEui: Eui64; code: string } {
  if (input.qrCode !== undefined) {
    if (input.devEui !== undefined || input.claimCode !== undefined) throw new CommissioningError('INVALID_INPUT', 'give either a QR code, or a DevEUI and a claim code');
    let qr;
    try {
      qr = parseDeviceQr(input.qrCode.trim());
    } catch (error) {
      if (error instanceof ProtocolError) throw new CommissioningError('INVALID_INPUT', `QR code: ${error.message}`);
      throw error;
    }
    if (qr.ownerToken === undefined) throw new CommissioningError('INVALID_INPUT', 'the QR code carries no owner token (claim code)');
    return { devEui: qr.devEui, code: normalized(qr.ownerToken) };
  }
  if (input.devEui === undefined || input.claimCode === undefined) throw new CommissioningError('INVALID_INPUT', 'give a DevEUI and a claim code, or a QR code');
  return { devEui: parseDevEui(input.devEui), code: normalized(input.claimCode) };
}

function normalized(code: string): string {
  try {
    return normalizeClaimCode(code);
  } catch (error) {
    if (error instanceof ProvisioningError) throw new CommissioningError('INVALID_INPUT', error.message);
    throw error;
  }
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a.toLowerCase(), 'utf8');
  const y = Buffer.from(b.toLowerCase(), 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Whether `code` claims `found` for `claimer` now. Does the same work whether or not there is a device. */
function claimable(found: FoundDevice | undefined, devEui: string, code: string, claimer: string, at: Date): boolean {
  const presented = claimCodeHash(devEui, code);
  const stored = found?.commissioning.claimCodeHash ?? null;
  const matches = sameHash(presented, stored ?? STAND_IN);
  if (found === undefined || stored === null || !matches) return false;
  const c = found.commissioning;
  if (c.claimExpiresAt !== null && c.claimExpiresAt.getTime() <= at.getTime()) return false;
  return c.owner === null || c.owner === claimer || !c.claimLocked;
}

export async function claimDevice(deps: ClaimDeps, caller: Caller, input: ClaimInput): Promise<ClaimOutcome> {
  const claimer = await claimingOrganisation(deps, caller);
  return claimAs(deps, caller, claimer, claimTarget(input), input);
}

/** The caller's organisation, if it may claim devices at all (scope and role); checked once per request. */
async function claimingOrganisation(deps: ClaimDeps, caller: Caller): Promise<string> {
  requireScope(caller, 'devices:claim');
  const claimer = caller.organisation;
  if (claimer === null) throw new CommissioningError('FORBIDDEN', 'devices are claimed by an organisation: use an organisation\'s API key');
  const org = await deps.storage.getOrganisation(claimer);
  if (org === undefined || !org.roles.includes('device-owner')) throw new CommissioningError('FORBIDDEN', `organisation ${claimer} does not have the device-owner role`);
  return claimer;
}

/** One device's claim for an organisation already checked by claimingOrganisation. */
async function claimAs(deps: ClaimDeps, caller: Caller, claimer: string, target: { devEui: Eui64; code: string }, input: Pick<ClaimInput, 'lock' | 'regenerate'>): Promise<ClaimOutcome> {
  const retryAfterS = deps.limiter.retryAfterS(caller.rateKey);
  if (retryAfterS > 0) throw new CommissioningError('RATE_LIMITED', `too many failed claims; try again in ${retryAfterS} s`, retryAfterS);
  const { devEui, code } = target;
  const at = (deps.now ?? (() => new Date()))();
  const found = await deps.storage.findDevice(devEui);
  if (!claimable(found, devEui, code, claimer, at)) {
    deps.limiter.fail(caller.rateKey);
    throw new CommissioningError('CLAIM_FAILED', CLAIM_FAILED);
  }
  const c = found!.commissioning;
  const lock = input.lock ?? true;
  const newCode = input.regenerate === true ? generateClaimCode() : undefined;
  const previous = c.owner;
  const audit: AuditEvent[] = [
    {
      at, actor: caller.actor, action: 'device.claim', subject: `device/${devEui}`, outcome: 'success', organisation: claimer,
      details: { locked: lock, regenerated: newCode !== undefined, from: previous === claimer ? 'self' : previous === null ? 'unclaimed' : 'another-owner', wasBound: found!.bound },
    },
  ];
  if (previous !== null && previous !== claimer) {
    audit.push({ at, actor: caller.actor, action: 'device.claimed-away', subject: `device/${devEui}`, outcome: 'success', organisation: previous, details: { wasBound: found!.bound } });
  }
  const changed = await deps.storage.claimDevice(
    devEui,
    { owner: claimer, expectOwner: previous, claimCodeHash: newCode === undefined ? c.claimCodeHash : claimCodeHash(devEui, newCode), locked: lock, expiresAt: newCode === undefined ? c.claimExpiresAt : null, at },
    audit,
  );
  // Someone else's claim won the race: to this caller it is a failed claim like any other.
  if (!changed) throw new CommissioningError('CLAIM_FAILED', CLAIM_FAILED);
  return { devEui, owner: claimer, locked: lock, ...(newCode === undefined ? {} : { claimCode: groupClaimCode(newCode) }) };
}

export interface BulkClaimResult {
  readonly claimed: number;
  readonly failed: number;
  readonly items: ReadonlyArray<{ readonly devEui: string | null; readonly outcome: 'claimed' | 'failed' | 'invalid' | 'rate-limited'; readonly claimCode?: string }>;
}

/** Claims each item on its own; a failure says only "failed" for that item, like a single claim would. */
export async function claimDevices(deps: ClaimDeps, caller: Caller, items: readonly ClaimInput[], options: { lock?: boolean; regenerate?: boolean } = {}): Promise<BulkClaimResult> {
  const claimer = await claimingOrganisation(deps, caller);
  if (items.length === 0) throw new CommissioningError('INVALID_INPUT', 'the manifest names no device');
  if (items.length > 10_000) throw new CommissioningError('INVALID_INPUT', 'at most 10,000 devices per bulk claim');
  const results: Array<BulkClaimResult['items'][number]> = [];
  for (const item of items) {
    let devEui: string | null = null;
    try {
      const target = claimTarget(item);
      devEui = target.devEui;
      const outcome = await claimAs(deps, caller, claimer, target, { lock: item.lock ?? options.lock, regenerate: item.regenerate ?? options.regenerate });
      results.push({ devEui, outcome: 'claimed', ...(outcome.claimCode === undefined ? {} : { claimCode: outcome.claimCode }) });
    } catch (error) {
      if (!(error instanceof CommissioningError)) throw error;
      results.push({ devEui, outcome: error.code === 'CLAIM_FAILED' ? 'failed' : error.code === 'RATE_LIMITED' ? 'rate-limited' : 'invalid' });
    }
  }
  return { claimed: results.filter((r) => r.outcome === 'claimed').length, failed: results.filter((r) => r.outcome !== 'claimed').length, items: results };
}
