import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { type InitOptions, initDataDir } from '../../src/app/init.js';
import { CONFIG_FILE, type JoinkeepConfig } from '../../src/app/config.js';
import { type Running, serve } from '../../src/app/serve.js';
import { addApplicationServer, addNetworkServer } from '../../src/commissioning/peers.js';
import { aesKeyWrap } from '../../src/custody/primitives.js';
import { addKek } from '../../src/provisioning/keks.js';
import { type AddDeviceInput, addDevice } from '../../src/provisioning/devices.js';
import type { DeviceRecord, Storage } from '../../src/storage/storage.js';
import { createTestDatabase } from './postgres.js';
import { createTestToken, softhsmModulePath } from './softhsm.js';
import { writeFile } from 'node:fs/promises';

/*
 * A running Joinkeep for end-to-end tests: a real data directory (SQLite file or PostgreSQL database),
 * software keystore, registered peers, and the Backend Interfaces server on a real loopback socket.
 * KEK values are the spec-notes §1.12 E ones so answers can be compared with published wraps.
 */

export const KEKS = {
  /** RFC 3394 §4.1 KEK; spec-notes §1.12 E wraps vector A's NwkSKey under it. */
  ns: { label: 'ns-000013', key: Buffer.from('000102030405060708090A0B0C0D0E0F', 'hex') },
  /** spec-notes §1.12 E wraps vector A's AppSKey under it. */
  as: { label: 'as-1', key: Buffer.from('101112131415161718191A1B1C1D1E1F', 'hex') },
  otherNs: { label: 'ns-000042', key: Buffer.from('202122232425262728292A2B2C2D2E2F', 'hex') },
  otherAs: { label: 'as-2', key: Buffer.from('303132333435363738393A3B3C3D3E3F', 'hex') },
  /** The maker's import KEK: root keys arrive wrapped under it. */
  import: { label: 'factory-import', key: Buffer.from('404142434445464748494A4B4C4D4E4F', 'hex') },
} as const;

export const TOKENS = {
  ns: 'ns-000013-token-5f1c9a0d2b7e4c3a',
  otherNs: 'ns-000042-token-8e2d4b6f1a3c5e7d',
  noKeyNs: 'ns-000099-token-0a1b2c3d4e5f6a7b',
  clearNs: 'ns-000077-token-9f8e7d6c5b4a3928',
  nsidNs: 'ns-000055-token-1122334455667788',
  as: 'as-1-token-6a5b4c3d2e1f0a9b8c7d',
  otherAs: 'as-2-token-1f2e3d4c5b6a79880716',
} as const;

/** NetIDs: 000013 home with KEK; 000042 another network with KEK; 000099 no KEK and no clear permission; 000077 clear keys allowed; 000055 registered with an NSID. */
export const NS_ID_OF_000055 = '00000000000000A5';

/**
 * The combinations the end-to-end suites run on: both databases with the software keystore, and keys in a
 * SoftHSM2 token over PKCS#11 (on SQLite; custody and storage are independent, the contract suites cover the rest).
 */
export const WORLDS = [
  { storage: 'sqlite', custody: 'software' },
  { storage: 'postgres', custody: 'software' },
  { storage: 'sqlite', custody: 'pkcs11' },
] as const;
export type WorldKind = (typeof WORLDS)[number];
export const worldName = (w: WorldKind): string => `${w.storage} + ${w.custody === 'pkcs11' ? 'PKCS#11 (SoftHSM2)' : 'software keystore'}`;

export interface World {
  readonly backend: 'sqlite' | 'postgres';
  readonly url: string;
  readonly dataDir: string;
  readonly storage: Storage;
  readonly running: Running;
  /** POSTs a Backend Interfaces message and returns the parsed answer; asserts HTTP 200 JSON. */
  post(body: unknown, token?: string, headers?: Record<string, string>): Promise<Record<string, any>>;
  provision(input: ProvisionInput): Promise<DeviceRecord>;
  stop(): Promise<void>;
}

export interface ProvisionInput extends Omit<AddDeviceInput, 'appKey' | 'nwkKey'> {
  readonly appKey: Buffer;
  readonly nwkKey?: Buffer | undefined;
}

/** `configure` edits joinkeep.json before the server starts (e.g. backend.admission). */
export async function startWorld(backend: 'sqlite' | 'postgres', custody: 'software' | 'pkcs11' = 'software', configure?: (config: JoinkeepConfig) => JoinkeepConfig): Promise<World> {
  const dataDir = await mkdtemp(join(tmpdir(), `joinkeep-world-${backend}-`));
  const database = backend === 'postgres' ? await createTestDatabase() : undefined;
  let pkcs11: InitOptions['pkcs11'];
  if (custody === 'pkcs11') {
    const token = createTestToken('world');
    const pinFile = join(dataDir, 'token.pin');
    await writeFile(pinFile, `${token.pin}\n`, { mode: 0o600 });
    pkcs11 = { kind: 'pkcs11', module: softhsmModulePath(), tokens: [{ label: token.label, pinFile }] };
  }
  const config = await initDataDir(join(dataDir, 'jk'), { storage: database ? { kind: 'postgres', url: database.url } : undefined, pkcs11 });
  if (configure !== undefined) await writeFile(join(dataDir, 'jk', CONFIG_FILE), `${JSON.stringify(configure(config), null, 2)}\n`);
  const running = await serve(join(dataDir, 'jk'), { listen: '127.0.0.1:0', logger: pino({ level: 'silent' }) });
  const jk = running.joinkeep;
  const deps = { storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'test' };
  for (const k of Object.values(KEKS)) await addKek(deps, k.label, Buffer.from(k.key));
  await addNetworkServer(deps, { netId: '000013', token: TOKENS.ns, kekLabel: KEKS.ns.label });
  await addNetworkServer(deps, { netId: '000042', token: TOKENS.otherNs, kekLabel: KEKS.otherNs.label });
  await addNetworkServer(deps, { netId: '000099', token: TOKENS.noKeyNs });
  await addNetworkServer(deps, { netId: '000077', token: TOKENS.clearNs, allowClearKeys: true });
  await addNetworkServer(deps, { netId: '000055', nsId: NS_ID_OF_000055, token: TOKENS.nsidNs, kekLabel: KEKS.ns.label });
  await addApplicationServer(deps, { asId: 'as-1', token: TOKENS.as, kekLabel: KEKS.as.label });
  await addApplicationServer(deps, { asId: 'as-2', token: TOKENS.otherAs, kekLabel: KEKS.otherAs.label });

  return {
    backend,
    url: running.url,
    dataDir: join(dataDir, 'jk'),
    storage: jk.storage,
    running,
    async post(body, token, headers = {}) {
      const res = await fetch(running.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${text}`);
      return JSON.parse(text) as Record<string, any>;
    },
    async provision(input) {
      const wrap = (key: Buffer) => JSON.stringify({ KEKLabel: KEKS.import.label, AESKey: aesKeyWrap(KEKS.import.key, key).toString('hex') });
      return addDevice(deps, { ...input, appKey: wrap(input.appKey), nwkKey: input.nwkKey && wrap(input.nwkKey) });
    },
    async stop() {
      await running.stop();
      await database?.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export function randomEui(prefix = ''): string {
  return (prefix + randomBytes(8).toString('hex')).slice(0, 16).toUpperCase();
}

export function randomKey(): Buffer {
  return randomBytes(16);
}
