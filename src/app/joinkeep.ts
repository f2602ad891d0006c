import { type KeyCustody, SoftwareKeyCustody, loadMasterKey } from '../custody/index.js';
import { type JoinService, createJoinService } from '../join/service.js';
import type { AuditSink } from '../observability/audit.js';
import { type Logger, createLogger } from '../observability/logger.js';
import { openStorage } from '../storage/open.js';
import type { Storage } from '../storage/storage.js';
import { type JoinkeepConfig, POSTGRES_URL_ENV, loadConfig, resolveIn } from './config.js';
import { openPkcs11 } from './pkcs11.js';
import { AppError } from './errors.js';

/** One opened data directory: configuration, storage, custody and the services wired on them. */
export interface Joinkeep {
  readonly dataDir: string;
  readonly config: JoinkeepConfig;
  readonly storage: Storage;
  readonly custody: KeyCustody;
  readonly audit: AuditSink;
  readonly joins: JoinService;
  readonly logger: Logger;
  close(): Promise<void>;
}

export async function openJoinkeep(dataDir: string, options: { logger?: Logger; env?: NodeJS.ProcessEnv } = {}): Promise<Joinkeep> {
  const env = options.env ?? process.env;
  const config = await loadConfig(dataDir);
  const logger = options.logger ?? createLogger();
  const storage = await openConfiguredStorage(dataDir, config, env, logger);
  try {
    await storage.migrate();
    const custody = await openCustody(dataDir, config, storage, env, logger);
    const joins = createJoinService({ storage, custody, settings: config.join });
    return {
      dataDir,
      config,
      storage,
      custody,
      audit: storage,
      joins,
      logger,
      async close() {
        await custody.close();
        await storage.close();
      },
    };
  } catch (error) {
    await storage.close();
    throw error;
  }
}

export async function openConfiguredStorage(dataDir: string, config: JoinkeepConfig, env: NodeJS.ProcessEnv, logger?: Logger): Promise<Storage> {
  if (config.storage.kind === 'sqlite') return openStorage({ kind: 'sqlite', path: resolveIn(dataDir, config.storage.path) });
  const url = env[POSTGRES_URL_ENV] ?? config.storage.url;
  if (!url) throw new AppError('CONFIG_INVALID', `PostgreSQL storage needs a URL: set ${POSTGRES_URL_ENV} or storage.url in joinkeep.json`);
  // A lost connection is not fatal: the pool opens a new one, and the query that used it fails with a storage error.
  const onConnectionError = logger && ((error: Error): void => logger.warn({ err: error }, 'PostgreSQL connection lost; the pool opens a new one'));
  const { maxConnections, connectTimeoutMs, maxGroupSize, maxGroupsInFlight } = config.storage;
  return openStorage({ kind: 'postgres', url, options: { onConnectionError, maxConnections, connectTimeoutMs, maxGroupSize, maxGroupsInFlight } });
}

async function openCustody(dataDir: string, config: JoinkeepConfig, storage: Storage, env: NodeJS.ProcessEnv, logger: Logger): Promise<KeyCustody> {
  if (config.custody.kind === 'pkcs11') return openPkcs11(dataDir, config.custody, env, logger);
  const source = 'file' in config.custody.masterKey ? { file: resolveIn(dataDir, config.custody.masterKey.file) } : config.custody.masterKey;
  const masterKey = await loadMasterKey(source, env);
  try {
    return new SoftwareKeyCustody(storage, masterKey);
  } finally {
    masterKey.fill(0);
  }
}
