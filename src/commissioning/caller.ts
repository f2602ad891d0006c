import { CommissioningError } from './errors.js';

/*
 * Who is asking. Every commissioning service takes a Caller; the REST API makes one from the Bearer API key, the CLI
 * makes the operator (cliCaller). Authorisation is decided in the services, so HTTP and CLI cannot disagree.
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
  /** The installation operator's: sees and may do everything. Only operator keys (organisation null) carry it. */
  'admin',
] as const;
export type Scope = (typeof scopes)[number];

export interface Caller {
  /** The caller's organisation; null = the installation operator. */
  readonly organisation: string | null;
  readonly scopes: ReadonlySet<string>;
  /** How it appears in the audit trail: `cli`, `api-key/<id>`. */
  readonly actor: string;
  /** What failed attempts are counted against (API key id, client-certificate fingerprint or IP). */
  readonly rateKey: string;
}

export function isScope(value: string): value is Scope {
  return (scopes as readonly string[]).includes(value);
}

/** `admin` implies every scope. */
export function hasScope(caller: Caller, scope: Scope): boolean {
  return caller.scopes.has('admin') || caller.scopes.has(scope);
}

export function isAdmin(caller: Caller): boolean {
  return caller.scopes.has('admin');
}

export function requireScope(caller: Caller, scope: Scope): void {
  if (!hasScope(caller, scope)) throw new CommissioningError('FORBIDDEN', `this API key lacks the scope ${scope}`);
}

/** The installation operator at the command line: the data directory's owner may do everything. */
export const cliCaller: Caller = Object.freeze({ organisation: null, scopes: new Set<string>(['admin']), actor: 'cli', rateKey: 'cli' });
