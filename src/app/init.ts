import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MASTER_KEY_ENV, createMasterKeyFile } from '../custody/index.js';
import { CONFIG_FILE, type CustodyConfig, type JoinkeepConfig, type StorageConfig, defaultConfig, parseListen, resolveIn } from './config.js';
import { AppError } from './errors.js';
import { openJoinkeep } from './joinkeep.js';
import { readSoPin } from './pkcs11.js';

export interface InitOptions {
  readonly storage?: StorageConfig;
  /** PKCS#11 custody (keys in an HSM); the software keystore when absent. */
  readonly pkcs11?: Extract<CustodyConfig, { kind: 'pkcs11' }> | undefined;
  /** Take the master key from this environment variable instead of creating a file. */
  readonly masterKeyEnv?: string | undefined;
  readonly listen?: string | undefined;
}

const MASTER_KEY_FILE = 'master.key';

/**
 * Creates a data directory: joinkeep.json, the 0600 master key file (unless the key comes from the
 * environment) and a migrated database. Nothing is left half-written: on failure, what was created is removed.
 */
export async function initDataDir(dataDir: string, options: InitOptions = {}, env: NodeJS.ProcessEnv = process.env): Promise<JoinkeepConfig> {
  if (await exists(join(dataDir, CONFIG_FILE))) {
    throw new AppError('DATA_DIR_EXISTS', `${dataDir} is already a Joinkeep data directory; choose another directory`);
  }
  if (options.listen !== undefined) parseListen(options.listen, '--listen');
  const masterKeyEnv = options.pkcs11 ? undefined : (options.masterKeyEnv ?? (env[MASTER_KEY_ENV] !== undefined ? MASTER_KEY_ENV : undefined));
  const custody: CustodyConfig = options.pkcs11 ?? { kind: 'software', masterKey: masterKeyEnv ? { env: masterKeyEnv } : { file: MASTER_KEY_FILE } };
  const base = defaultConfig(options.storage ?? { kind: 'sqlite', path: 'joinkeep.db' }, custody);
  const config: JoinkeepConfig = options.listen ? { ...base, backend: { ...base.backend, listen: options.listen } } : base;
  if (custody.kind === 'pkcs11' && custody.trustedKeks === true) {
    // Trusted-KEK mode: every SO PIN source must be readable now (the PIN itself is checked by `kek add`, the only
    // command that logs in as the Security Officer).
    for (const t of custody.tokens) await readSoPin(dataDir, t, env);
  }

  const created: string[] = [];
  const dirExisted = await exists(dataDir);
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    if (custody.kind === 'software' && !masterKeyEnv) {
      const keyPath = join(dataDir, MASTER_KEY_FILE);
      if (await exists(keyPath)) throw new AppError('DATA_DIR_EXISTS', `${keyPath} already exists; refusing to overwrite a master key`);
      await createMasterKeyFile(keyPath);
      created.push(keyPath);
    }
    await writeFile(join(dataDir, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    created.push(join(dataDir, CONFIG_FILE));
    if (config.storage.kind === 'sqlite') {
      const db = resolveIn(dataDir, config.storage.path);
      created.push(db, `${db}-wal`, `${db}-shm`);
    }
    const jk = await openJoinkeep(dataDir, { env });
    try {
      // A pool is created whole: every token must open, log in and hold the same keys now, or init fails.
      const out = jk.custody.status?.().members.filter((m) => m.state !== 'up') ?? [];
      if (out.length > 0) {
        throw new AppError(
          'CONFIG_INVALID',
          `token ${out.map((m) => `"${m.name}" is ${m.state}: ${m.lastError ?? 'unknown reason'}`).join('; ')}. Every token of a pool must open and hold the same keys (start from empty tokens)`,
        );
      }
      await jk.audit.appendAudit({ at: new Date(), actor: 'cli', action: 'datadir.init', subject: 'joinkeep', outcome: 'success', details: { storage: config.storage.kind, custody: config.custody.kind } });
    } finally {
      await jk.close();
    }
    return config;
  } catch (error) {
    for (const path of created.reverse()) await rm(path, { force: true });
    if (!dirExisted) await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
