import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { AdmissionSettings } from '../backend/admission.js';
import { type JoinSettings, defaultJoinSettings } from '../join/context.js';
import { AppError } from './errors.js';

/*
 * joinkeep.json in the data directory: written by `joinkeep init`, read only here (STYLE rule 12).
 * Relative paths are relative to the data directory. Secrets are never in it: the PostgreSQL URL may
 * come from JOINKEEP_POSTGRES_URL, the master key from its 0600 file or JOINKEEP_MASTER_KEY.
 */

export const CONFIG_FILE = 'joinkeep.json';
export const POSTGRES_URL_ENV = 'JOINKEEP_POSTGRES_URL';

export type StorageConfig = { readonly kind: 'sqlite'; readonly path: string } | PostgresStorageConfig;

/** PostgreSQL storage; the tuning keys are optional and documented in docs/operations.md ("joinkeep.json"). */
export interface PostgresStorageConfig {
  readonly kind: 'postgres';
  readonly url?: string;
  /** Connections in each process's pool (default 10). */
  readonly maxConnections?: number;
  /** How long a request waits for a pooled connection, ms (default 10000). */
  readonly connectTimeoutMs?: number;
  /** Most reservations committed in one transaction (default 128). */
  readonly maxGroupSize?: number;
  /** Group transactions committing at once, each on its own connection (default 2; fewer than maxConnections). */
  readonly maxGroupsInFlight?: number;
}

const POSTGRES_TUNING = { maxConnections: [2, 1000], connectTimeoutMs: [100, 600_000], maxGroupSize: [1, 1024], maxGroupsInFlight: [1, 999] } as const;

function validatePostgresStorage(storage: Record<string, unknown>, fail: (what: string) => never): void {
  const unknownKey = Object.keys(storage).find((k) => k !== 'kind' && k !== 'url' && !(k in POSTGRES_TUNING));
  if (unknownKey !== undefined) fail(`storage: unknown key "${unknownKey}" (url, ${Object.keys(POSTGRES_TUNING).join(', ')})`);
  if (storage['url'] !== undefined && (typeof storage['url'] !== 'string' || storage['url'] === '')) fail('storage.url must be a PostgreSQL URL');
  for (const [k, [min, max]] of Object.entries(POSTGRES_TUNING)) {
    const v = storage[k];
    if (v !== undefined && (!Number.isInteger(v) || (v as number) < min || (v as number) > max)) fail(`storage.${k} must be an integer ${min}..${max}`);
  }
  const connections = (storage['maxConnections'] as number | undefined) ?? 10;
  const groups = (storage['maxGroupsInFlight'] as number | undefined) ?? 2;
  // Every group holds a connection until it commits; the join path's look-ups and the API need one too.
  if (groups >= connections) fail(`storage.maxGroupsInFlight (${groups}) must be smaller than storage.maxConnections (${connections})`);
}
/** Where a PIN comes from: a file (first line) or an environment variable; never the command line or this file. */
export type PinSource = { readonly pinFile: string } | { readonly pinEnv: string };
/** Where the Security Officer's PIN comes from (trusted-KEK mode only); same rules as the user PIN. */
export type SoPinSource = { readonly soPinFile: string } | { readonly soPinEnv: string };
export type Pkcs11TokenConfig = { readonly label: string; readonly module?: string } & PinSource & Partial<{ readonly soPinFile: string; readonly soPinEnv: string }>;

export type CustodyConfig =
  | { readonly kind: 'software'; readonly masterKey: { readonly file: string } | { readonly env: string } }
  | {
      readonly kind: 'pkcs11';
      /** Path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so. */
      readonly module: string;
      /**
       * Tokens by label, each with its PIN source; two or more make a high-availability pool in which every key is
       * kept on every token. `module` overrides the library for one token (HSMs of different makes).
       */
      readonly tokens: readonly Pkcs11TokenConfig[];
      /**
       * Trusted-KEK mode (docs/security.md): session keys leave wrapped only under KEKs the Security Officer marked
       * trusted (CKA_TRUSTED); each token then names its SO PIN source (soPinFile or soPinEnv), used only by
       * `joinkeep kek add`. Absent or false: KEKs are created by the user, as before.
       */
      readonly trustedKeks?: boolean;
      /** Worker threads running PKCS#11 calls off the event loop (default 2). */
      readonly workers?: number;
      /** Operations that may wait for a worker before new ones are refused as overload (default 1024). */
      readonly maxQueue?: number;
      /** How often each token is probed, and a failed one reopened (default 2000 ms). */
      readonly healthIntervalMs?: number;
      /** A token that has not answered a key operation within this time is taken out of service (default 1000 ms). */
      readonly operationTimeoutMs?: number;
    };

export interface BackendConfig {
  /** HOST:PORT of the Backend Interfaces listener. */
  readonly listen: string;
  readonly paths: readonly string[];
  readonly bodyLimit: number;
  readonly tls?: { readonly keyFile: string; readonly certFile: string; readonly clientCaFile?: string } | undefined;
  /**
   * Admission control of JoinReq/RejoinReq per process (docs/operations.md): any field left out takes its default
   * (maxInFlight 64, maxQueue 1024, maxQueueMs 250); false turns it off (not recommended: past saturation every
   * answer comes late).
   */
  readonly admission?: Partial<AdmissionSettings> | false | undefined;
}

export interface JoinkeepConfig {
  readonly version: 1;
  readonly storage: StorageConfig;
  readonly custody: CustodyConfig;
  readonly backend: BackendConfig;
  /** Separate listener for /metrics and /healthz; when absent they are served on the backend listener. */
  readonly admin?: { readonly listen: string } | undefined;
  /** The REST API (/api/v1) on a listener of its own; off when absent. */
  readonly api?: ApiConfig | undefined;
  readonly join: JoinSettings;
}

export interface ApiConfig {
  readonly listen: string;
  /** Largest request body, bytes: a sealed batch of 100,000 devices is about 30 MB (default 64 MiB). */
  readonly bodyLimit?: number;
}

export const DEFAULT_LISTEN = '127.0.0.1:8090';
export const DEFAULT_API_BODY_LIMIT = 64 * 1024 * 1024;

export function defaultConfig(storage: StorageConfig, custody: CustodyConfig): JoinkeepConfig {
  return { version: 1, storage, custody, backend: { listen: DEFAULT_LISTEN, paths: ['/'], bodyLimit: 64 * 1024 }, join: defaultJoinSettings };
}

export async function loadConfig(dataDir: string): Promise<JoinkeepConfig> {
  const path = join(dataDir, CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new AppError('DATA_DIR_MISSING', `${dataDir} is not a Joinkeep data directory (no ${CONFIG_FILE}); create it with \`joinkeep init --data-dir ${dataDir}\``);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new AppError('CONFIG_INVALID', `${path} is not valid JSON`);
  }
  return validateConfig(raw, path);
}

export function validateConfig(raw: unknown, where: string): JoinkeepConfig {
  const o = raw as Partial<JoinkeepConfig> | null;
  const fail = (what: string): never => {
    throw new AppError('CONFIG_INVALID', `${where}: ${what}`);
  };
  if (typeof o !== 'object' || o === null) return fail('must be a JSON object');
  if (o.version !== 1) fail('version must be 1');
  const storage = o.storage;
  if (!storage || (storage.kind !== 'sqlite' && storage.kind !== 'postgres')) fail('storage.kind must be "sqlite" or "postgres"');
  if (storage!.kind === 'sqlite' && typeof storage!.path !== 'string') fail('storage.path must be a file name');
  if (storage!.kind === 'postgres') validatePostgresStorage(storage as unknown as Record<string, unknown>, fail);
  const custody = o.custody;
  if (custody?.kind === 'pkcs11') {
    if (typeof custody.module !== 'string' || custody.module === '') fail('custody.module must be the path of a PKCS#11 library');
    const tokens: unknown = custody.tokens;
    const valid = (t: unknown): boolean => {
      const x = t as Record<string, unknown> | null;
      return (
        typeof x?.['label'] === 'string' &&
        x['label'] !== '' &&
        (typeof x['pinFile'] === 'string' || typeof x['pinEnv'] === 'string') &&
        (x['module'] === undefined || (typeof x['module'] === 'string' && x['module'] !== ''))
      );
    };
    if (!Array.isArray(tokens) || tokens.length === 0 || !tokens.every(valid)) {
      fail('custody.tokens must list tokens as {"label":…,"pinFile":…} or {"label":…,"pinEnv":…} (optionally with "module")');
    }
    if (new Set((tokens as { label: string }[]).map((t) => t.label)).size !== (tokens as unknown[]).length) fail('custody.tokens lists a token label twice');
    if (custody.trustedKeks !== undefined && typeof custody.trustedKeks !== 'boolean') fail('custody.trustedKeks must be true or false');
    for (const t of tokens as Record<string, unknown>[]) {
      const so = ['soPinFile', 'soPinEnv'].filter((k) => t[k] !== undefined);
      if (so.some((k) => typeof t[k] !== 'string' || t[k] === '')) fail(`custody.tokens: "${String(t['label'])}": soPinFile / soPinEnv must be a file name / a variable name (never the PIN itself)`);
      if (custody.trustedKeks === true && so.length !== 1) fail(`custody.trustedKeks needs each token to name its Security Officer PIN source: "soPinFile" or "soPinEnv" (exactly one) on token "${String(t['label'])}"`);
      if (custody.trustedKeks !== true && so.length > 0) fail(`custody.tokens: token "${String(t['label'])}" has an SO PIN source, which is used only with "trustedKeks": true`);
      if (typeof t['soPin'] === 'string' || typeof t['pin'] === 'string') fail(`custody.tokens: token "${String(t['label'])}" holds a PIN; give "pinFile"/"pinEnv" and "soPinFile"/"soPinEnv" instead`);
    }
    if (custody.workers !== undefined && (!Number.isInteger(custody.workers) || custody.workers < 1 || custody.workers > 64)) fail('custody.workers must be an integer 1..64');
    if (custody.maxQueue !== undefined && (!Number.isInteger(custody.maxQueue) || custody.maxQueue < 0)) fail('custody.maxQueue must be a non-negative integer');
    for (const k of ['healthIntervalMs', 'operationTimeoutMs'] as const) {
      const v = custody[k];
      if (v !== undefined && (!Number.isInteger(v) || v < 10 || v > 600_000)) fail(`custody.${k} must be an integer number of milliseconds, 10..600000`);
    }
  } else if (!custody || custody.kind !== 'software' || typeof custody.masterKey !== 'object') {
    fail('custody must be {"kind":"software","masterKey":{"file":…}|{"env":…}} or {"kind":"pkcs11","module":…,"tokens":[…]}');
  }
  const backend = { listen: DEFAULT_LISTEN, paths: ['/'], bodyLimit: 64 * 1024, ...o.backend };
  parseListen(backend.listen, `${where}: backend.listen`);
  if (!Array.isArray(backend.paths) || backend.paths.some((p) => typeof p !== 'string' || !p.startsWith('/'))) fail('backend.paths must be a list of paths starting with "/"');
  const admission: unknown = backend.admission;
  if (admission !== undefined && admission !== false) {
    if (typeof admission !== 'object' || admission === null || Array.isArray(admission)) fail('backend.admission must be an object {"maxInFlight","maxQueue","maxQueueMs"} or false');
    const a = admission as Record<string, unknown>;
    const unknownKey = Object.keys(a).find((k) => !['maxInFlight', 'maxQueue', 'maxQueueMs'].includes(k));
    if (unknownKey !== undefined) fail(`backend.admission: unknown key "${unknownKey}" (maxInFlight, maxQueue, maxQueueMs)`);
    const bounds = { maxInFlight: [1, 100_000], maxQueue: [0, 1_000_000], maxQueueMs: [1, 60_000] } as const;
    for (const [k, [min, max]] of Object.entries(bounds)) {
      const v = a[k];
      if (v !== undefined && (!Number.isInteger(v) || (v as number) < min || (v as number) > max)) fail(`backend.admission.${k} must be an integer ${min}..${max}`);
    }
  }
  if (o.admin !== undefined) parseListen(o.admin.listen, `${where}: admin.listen`);
  if (o.api !== undefined) {
    parseListen(o.api.listen, `${where}: api.listen`);
    if (o.api.bodyLimit !== undefined && (!Number.isSafeInteger(o.api.bodyLimit) || o.api.bodyLimit < 1024)) fail('api.bodyLimit must be an integer of at least 1024 (bytes)');
  }
  const settings = { ...defaultJoinSettings, ...o.join };
  for (const [k, v] of Object.entries(settings)) if (!Number.isInteger(v) || v < 0) fail(`join.${k} must be a non-negative integer`);
  if (settings.sessionLimit < 1) fail('join.sessionLimit must be at least 1');
  return { version: 1, storage: storage!, custody: custody!, backend, admin: o.admin, api: o.api, join: settings };
}

export function parseListen(text: string, what = 'listen address'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text ?? '');
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new AppError('CONFIG_INVALID', `${what} must be HOST:PORT (for example 127.0.0.1:8090), got ${JSON.stringify(text)}`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export function resolveIn(dataDir: string, path: string): string {
  return isAbsolute(path) ? path : join(dataDir, path);
}
