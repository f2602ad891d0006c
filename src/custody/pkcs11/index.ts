import type { KeyCustody } from '../custody.js';
import { CustodyError } from '../errors.js';
import { acquireModule, releaseModule } from './module.js';
import { Pkcs11KeyCustody, type Pkcs11CustodyOptions } from './pkcs11-custody.js';
import { type TokenIdentity, TokenSession } from './token-session.js';
import { WorkerPool } from './worker-pool.js';

export { Pkcs11KeyCustody, type Pkcs11CustodyOptions, pkcs11WorkersForTest } from './pkcs11-custody.js';
export type { TokenIdentity } from './token-session.js';
export { DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_WORKERS, type WorkerPoolOptions } from './worker-pool.js';

export interface Pkcs11CustodyConfig {
  /** Path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  readonly modulePath: string;
  /** Tokens by label with their user PIN. Only the first is used for now; a pool comes next. */
  readonly tokens: readonly TokenIdentity[];
}

/**
 * Opens PKCS#11 custody: loads the module (once per process), opens a session on the first token and logs in on
 * this thread, then starts the worker pool (`options.workers`, default 2; `options.maxQueue`, default 1024;
 * `options.maxBatch`, default 16), each worker with its own session. Fails with TOKEN_UNAVAILABLE when the module cannot be loaded, no token has the
 * label, or the PIN is refused — checked here, before any worker starts.
 */
export async function openPkcs11Custody(config: Pkcs11CustodyConfig, options: Pkcs11CustodyOptions = {}): Promise<KeyCustody> {
  const first = config.tokens[0];
  if (first === undefined) throw new CustodyError('TOKEN_UNAVAILABLE', 'no PKCS#11 token is configured');
  const module = acquireModule(config.modulePath);
  let login: TokenSession | undefined;
  try {
    login = TokenSession.open(module, first);
    const pool = await WorkerPool.start({ modulePath: config.modulePath, token: { label: first.label, pin: first.pin } }, module, options);
    return new Pkcs11KeyCustody(module, login, pool, options);
  } catch (error) {
    login?.close();
    releaseModule(module);
    throw error;
  }
}
