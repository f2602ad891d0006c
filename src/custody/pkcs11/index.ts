import type { KeyCustody } from '../custody.js';
import { CustodyError } from '../errors.js';
import { ReplicatedKeyCustody, type ReplicatedCustodyOptions } from '../replicated-custody.js';
import { acquireModule, releaseModule } from './module.js';
import { Pkcs11KeyCustody, type Pkcs11CustodyOptions } from './pkcs11-custody.js';
import { type TokenIdentity, TokenSession } from './token-session.js';
import { WorkerPool } from './worker-pool.js';

export { PENDING_PREFIX, type TrustedKekToken, createTrustedKeks, refuseSecurityOfficerLogin } from './trusted-kek.js';
export { exportSealedTrusted } from './trusted-export.js';
export { Pkcs11KeyCustody, type Pkcs11CustodyOptions, pkcs11WorkersForTest } from './pkcs11-custody.js';
export type { TokenIdentity } from './token-session.js';
export { DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_WORKERS, type WorkerPoolOptions } from './worker-pool.js';
export { ReplicatedKeyCustody, type ReplicaEvent } from '../replicated-custody.js';

export interface PoolTokenIdentity extends TokenIdentity {
  /** The member's own PKCS#11 library, when members are HSMs of different makes (default: the pool's). */
  readonly modulePath?: string | undefined;
}

export interface Pkcs11CustodyConfig {
  /** Path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  readonly modulePath: string;
  /** Tokens by label with their user PIN: one token, or a pool of two or more holding the same keys. */
  readonly tokens: readonly PoolTokenIdentity[];
  /**
   * Trusted-KEK mode: session keys that leave wrapped can be wrapped only under KEKs with CKA_TRUSTED=true, which only
   * createTrustedKeks makes (as the Security Officer, in a process where this custody is not open). importKek and
   * KEK envelopes are refused with KEK_NOT_TRUSTED.
   */
  readonly trustedKeks?: boolean | undefined;
}

/**
 * Opens PKCS#11 custody over every configured token as one pool (replicated-custody.ts): each member with its
 * own login and worker pool (Pkcs11CustodyOptions), health checks, failover and readmission (pool options). A single
 * token is a pool of one, so an HSM that goes away and comes back is reopened without restarting Joinkeep.
 */
export async function openPkcs11Custody(config: Pkcs11CustodyConfig, options: Pkcs11CustodyOptions & ReplicatedCustodyOptions = {}): Promise<KeyCustody> {
  if (config.tokens.length === 0) throw new CustodyError('TOKEN_UNAVAILABLE', 'no PKCS#11 token is configured');
  return ReplicatedKeyCustody.open(
    'pkcs11',
    config.tokens.map((token) => ({
      name: token.label,
      open: () => openPkcs11Token(token.modulePath ?? config.modulePath, token, { ...options, trustedKeks: config.trustedKeks === true || options.trustedKeks === true }),
    })),
    options,
  );
}

/**
 * Opens PKCS#11 custody on one token: loads the module (once per process), opens a session on the token and logs in
 * on this thread, then starts the worker pool (`options.workers`, default 2; `options.maxQueue`, default 1024;
 * `options.maxBatch`, default 16), each worker with its own session. Fails with TOKEN_UNAVAILABLE when the module
 * cannot be loaded, no token has the label, or the PIN is refused — checked here, before any worker starts.
 */
export async function openPkcs11Token(modulePath: string, token: TokenIdentity, options: Pkcs11CustodyOptions = {}): Promise<Pkcs11KeyCustody> {
  const module = acquireModule(modulePath);
  let login: TokenSession | undefined;
  try {
    login = TokenSession.open(module, token);
    const pool = await WorkerPool.start({ modulePath, token: { label: token.label, pin: token.pin } }, module, options);
    return new Pkcs11KeyCustody(module, login, pool, options);
  } catch (error) {
    login?.close();
    releaseModule(module);
    throw error;
  }
}
