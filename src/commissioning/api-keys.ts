import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AuditSink } from '../observability/audit.js';
import { StorageError } from '../storage/errors.js';
import type { ApiKeyRecord, CommissioningStore } from '../storage/storage.js';
import { type Caller, type Scope, hasScope, isOperator, isScope } from './caller.js';
import { CommissioningError } from './errors.js';

/*
 * API keys (docs/api/rest.md, "Authentication"): `jk_<id>_<secret>`. The id (16 characters of lower-case base32,
 * 80 random bits) is public and names the key in lists and the audit trail; the secret (32 random bytes, base64url)
 * is shown once and only its SHA-256 is stored. A key is checked by looking its id up and comparing the hashes in
 * constant time. Every refusal — malformed, unknown id, wrong secret, revoked, expired — is the same error with the
 * same text, so a caller learns nothing about which keys exist.
 */

export type ApiKeyStore = Pick<CommissioningStore, 'insertApiKey' | 'getApiKey' | 'listApiKeys' | 'revokeApiKey' | 'getOrganisation'>;

export interface ApiKeyDeps {
  readonly store: ApiKeyStore;
  readonly audit: AuditSink;
  readonly now?: () => Date;
}

/** An API key as it may be shown: never the secret, never its hash. */
export interface ApiKeyView {
  readonly id: string;
  readonly organisation: string | null;
  readonly name: string;
  readonly scopes: readonly string[];
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
}

export interface NewApiKey {
  readonly name: string;
  readonly scopes: readonly string[];
  readonly expiresAt?: Date | null | undefined;
}

const KEY = /^jk_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$/;
const NAME = /^[^\p{Cc}]{1,100}$/u;
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

const unauthenticated = () => new CommissioningError('UNAUTHENTICATED', 'a valid API key is required (Authorization: Bearer jk_…)');

/** Creates a key of an organisation. The caller must be the operator or that organisation (with api-keys:write). */
export async function createApiKey(deps: ApiKeyDeps, caller: Caller, organisation: string, input: NewApiKey): Promise<{ readonly key: string; readonly apiKey: ApiKeyView }> {
  await visibleOrganisation(deps, caller, organisation);
  if (!hasScope(caller, 'api-keys:write')) throw new CommissioningError('FORBIDDEN', 'this API key lacks the scope api-keys:write');
  const scopes = checkScopes(input.scopes);
  if (scopes.includes('admin')) throw new CommissioningError('FORBIDDEN', 'an organisation\'s key cannot have the scope admin; operator keys are made with `joinkeep api-key create --operator`');
  // No escalation: an organisation's key hands out at most what it holds itself.
  const beyond = caller.scopes.has('admin') ? [] : scopes.filter((s) => !caller.scopes.has(s));
  if (beyond.length > 0) throw new CommissioningError('FORBIDDEN', `this API key cannot grant scopes it does not hold: ${beyond.join(', ')}`);
  return issue(deps, caller.actor, organisation, { ...input, scopes });
}

/** Creates an installation-operator key (organisation null). Only the CLI calls this: nothing over HTTP makes one. */
export async function createOperatorApiKey(deps: ApiKeyDeps, actor: string, input: NewApiKey): Promise<{ readonly key: string; readonly apiKey: ApiKeyView }> {
  return issue(deps, actor, null, { ...input, scopes: checkScopes(input.scopes) });
}

/** The key presented as a Bearer token, or UNAUTHENTICATED (one error for every reason). */
export async function authenticateApiKey(deps: Pick<ApiKeyDeps, 'store' | 'now'>, presented: string): Promise<ApiKeyRecord> {
  const m = KEY.exec(presented);
  const id = m?.[1] ?? null;
  const secretSha256 = sha256(m?.[2] ?? presented);
  const record = id === null ? undefined : await deps.store.getApiKey(id);
  // Compare even when there is nothing to compare with, so an unknown id costs what a wrong secret costs.
  const stored = Buffer.from(record?.secretSha256 ?? '0'.repeat(64), 'hex');
  const matches = stored.length === 32 && timingSafeEqual(stored, Buffer.from(secretSha256, 'hex'));
  if (record === undefined || !matches) throw unauthenticated();
  const now = (deps.now ?? (() => new Date()))();
  if (record.revokedAt !== null || (record.expiresAt !== null && record.expiresAt <= now)) throw unauthenticated();
  return record;
}

/** What a request authenticated with this key may do. */
export function callerOfApiKey(key: ApiKeyRecord): Caller {
  // An organisation's key never acts as the operator, whatever was stored.
  const granted = key.organisation === null ? key.scopes : key.scopes.filter((s) => s !== 'admin');
  return { organisation: key.organisation, scopes: new Set(granted), actor: `api-key/${key.id}`, rateKey: `api-key/${key.id}` };
}

/** Keys of an organisation, or (null, operator only) the operator keys; ordered by id. */
export async function listApiKeys(deps: ApiKeyDeps, caller: Caller, organisation: string | null): Promise<ApiKeyView[]> {
  if (organisation === null) {
    if (!isOperator(caller)) throw new CommissioningError('FORBIDDEN', 'only the operator may list operator keys');
  } else {
    await visibleOrganisation(deps, caller, organisation);
    if (!hasScope(caller, 'api-keys:write')) throw new CommissioningError('FORBIDDEN', 'this API key lacks the scope api-keys:write');
  }
  const keys = await deps.store.listApiKeys(organisation);
  return keys.map(view).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Revokes a key from now on. `organisation`, when given (the REST route's path), must be the key's. A key the caller may
 * not see is answered as an unknown one. Revoking a revoked key changes nothing and succeeds.
 */
export async function revokeApiKey(deps: ApiKeyDeps, caller: Caller, id: string, organisation?: string | null): Promise<ApiKeyView> {
  const notFound = () => new CommissioningError('NOT_FOUND', `API key ${id} not found`);
  const key = /^[a-z2-7]{16}$/.test(id) ? await deps.store.getApiKey(id) : undefined;
  if (key === undefined) throw notFound();
  if (organisation !== undefined && key.organisation !== organisation) throw notFound();
  if (!isOperator(caller) && (key.organisation === null || key.organisation !== caller.organisation)) throw notFound();
  if (!hasScope(caller, 'api-keys:write')) throw new CommissioningError('FORBIDDEN', 'this API key lacks the scope api-keys:write');
  if (key.revokedAt !== null) return view(key);
  const at = (deps.now ?? (() => new Date()))();
  if (!(await deps.store.revokeApiKey(id, at))) throw notFound();
  await deps.audit.appendAudit({ at, actor: caller.actor, action: 'api-key.revoke', subject: `api-key/${id}`, outcome: 'success', details: { name: key.name }, organisation: key.organisation });
  return view({ ...key, revokedAt: at });
}

export function view(k: ApiKeyRecord): ApiKeyView {
  return { id: k.id, organisation: k.organisation, name: k.name, scopes: k.scopes, createdAt: k.createdAt, expiresAt: k.expiresAt, revokedAt: k.revokedAt };
}

async function issue(deps: ApiKeyDeps, actor: string, organisation: string | null, input: NewApiKey & { scopes: Scope[] }): Promise<{ key: string; apiKey: ApiKeyView }> {
  const name = input.name.trim();
  if (!NAME.test(name)) throw new CommissioningError('INVALID_INPUT', 'an API key needs a name of 1–100 characters (what it is for, e.g. "factory line 2")');
  const createdAt = (deps.now ?? (() => new Date()))();
  const expiresAt = input.expiresAt ?? null;
  if (expiresAt !== null && (Number.isNaN(expiresAt.getTime()) || expiresAt <= createdAt)) throw new CommissioningError('INVALID_INPUT', 'an API key\'s expiry must be a valid time in the future');
  // 80 random bits: a clash is not expected, but is retried rather than failing the call.
  for (let attempt = 0; ; attempt++) {
    const id = base32(randomBytes(10));
    const secret = randomBytes(32).toString('base64url');
    const record: ApiKeyRecord = { id, organisation, name, secretSha256: sha256(secret), scopes: input.scopes, createdAt, expiresAt, revokedAt: null };
    try {
      await deps.store.insertApiKey(record);
    } catch (error) {
      if (error instanceof StorageError && error.code === 'API_KEY_EXISTS' && attempt < 2) continue;
      throw error;
    }
    await deps.audit.appendAudit({
      at: createdAt,
      actor,
      action: 'api-key.create',
      subject: `api-key/${id}`,
      outcome: 'success',
      details: { name, scopes: input.scopes, expiresAt: expiresAt?.toISOString() ?? null },
      organisation,
    });
    return { key: `jk_${id}_${secret}`, apiKey: view(record) };
  }
}

function checkScopes(requested: readonly string[]): Scope[] {
  const unknown = requested.filter((s) => !isScope(s));
  if (unknown.length > 0) throw new CommissioningError('INVALID_INPUT', `unknown scope(s): ${unknown.join(', ')}`);
  const unique = [...new Set(requested)] as Scope[];
  if (unique.length === 0) throw new CommissioningError('INVALID_INPUT', 'an API key needs at least one scope');
  return unique;
}

/** The organisation exists and the caller may see it (the operator, or the organisation itself); else NOT_FOUND. */
async function visibleOrganisation(deps: ApiKeyDeps, caller: Caller, organisation: string): Promise<void> {
  const visible = isOperator(caller) || caller.organisation === organisation;
  if (!visible || (await deps.store.getOrganisation(organisation)) === undefined) throw new CommissioningError('NOT_FOUND', `organisation ${organisation} not found`);
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** RFC 4648 base32, lower case, no padding: 10 bytes → 16 characters. */
function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}
