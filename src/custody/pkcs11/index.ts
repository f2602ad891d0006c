import type { KeyCustody } from '../custody.js';
import { CustodyError } from '../errors.js';
import { acquireModule, releaseModule } from './module.js';
import { Pkcs11KeyCustody, type Pkcs11CustodyOptions } from './pkcs11-custody.js';
import { type TokenIdentity, TokenSession } from './token-session.js';

export { Pkcs11KeyCustody, type Pkcs11CustodyOptions } from './pkcs11-custody.js';
export type { TokenIdentity } from './token-session.js';

export interface Pkcs11CustodyConfig {
  /** Path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  readonly modulePath: string;
  /** Tokens by label with their user PIN. Only the first is used for now; a pool comes next. */
  readonly tokens: readonly TokenIdentity[];
}

/**
 * Opens PKCS#11 custody: loads the module (once per process), opens a session on the first token and logs in.
 * Fails with TOKEN_UNAVAILABLE when the module cannot be loaded, no token has the label, or the PIN is refused.
 */
export async function openPkcs11Custody(config: Pkcs11CustodyConfig, options: Pkcs11CustodyOptions = {}): Promise<KeyCustody> {
  const first = config.tokens[0];
  if (first === undefined) throw new CustodyError('TOKEN_UNAVAILABLE', 'no PKCS#11 token is configured');
  const module = acquireModule(config.modulePath);
  try {
    const session = TokenSession.open(module, first);
    return new Pkcs11KeyCustody(module, [session], options);
  } catch (error) {
    releaseModule(module);
    throw error;
  }
}
