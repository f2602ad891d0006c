import { CommissioningError } from './errors.js';

/*
 * Who is asking: an organisation's API key (or the TTS claim client's certificate), or the installation operator
 * (organisation null, scope `admin`). Every commissioning service takes one and checks scopes and ownership itself,
 * so the REST API, the claim API v2 and the CLI cannot differ in what they allow.
 */

export const scopes = [
  'devices:read',
  'devices:claim',
  'devices:bind',
  'devices:transfer',
  'batches:read',
  'batches:write',
  'peers:read',
  'peers:write',
  'keks:read',
  'audit:read',
  'api-keys:write',
  'admin',
] as const;
export type Scope = (typeof scopes)[number];

export interface Caller {
  /** The caller's organisation; null for the installation operator. */
  readonly organisation: string | null;
  readonly scopes: ReadonlySet<string>;
  /** For the audit trail, e.g. `api-key/abcd…` or `cli`. */
  readonly actor: string;
  /** What failed claims are counted against (API key id, client certificate fingerprint, address). */
  readonly rateKey: string;
}

/**
 * An installation-operator key (no organisation) acts for every organisation within its scopes: it sees every device
 * and every maker's batches. Its scopes still limit what it may do; `admin` holds them all.
 */
export const isOperator = (caller: Caller): boolean => caller.organisation === null;

export function isScope(value: string): value is Scope {
  return (scopes as readonly string[]).includes(value);
}

/** `admin` holds every scope. */
export function hasScope(caller: Caller, scope: Scope): boolean {
  return caller.scopes.has(scope) || caller.scopes.has('admin');
}

export function requireScope(caller: Caller, scope: Scope): void {
  if (hasScope(caller, scope)) return;
  throw new CommissioningError('FORBIDDEN', `this API key lacks the scope ${scope}`);
}

/** The organisation a device-changing call acts for; the operator acts for whoever owns the device (null). */
export function ownerScopeOf(caller: Caller): string | null {
  if (caller.organisation !== null) return caller.organisation;
  if (isOperator(caller)) return null;
  throw new CommissioningError('FORBIDDEN', 'this API key belongs to no organisation');
}

/** The CLI on the data directory is the installation operator. */
export const operatorCaller = (actor = 'cli'): Caller => ({ organisation: null, scopes: new Set(['admin']), actor, rateKey: actor });
