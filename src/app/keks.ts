import { AppError } from './errors.js';
import { type JoinkeepConfig, loadConfig } from './config.js';
import { type Joinkeep, openJoinkeep } from './joinkeep.js';
import { readPin, readSoPin } from './pkcs11.js';
import { addKek, addWrappedKek, assertKekLabel } from '../provisioning/keks.js';
import { ProvisioningError } from '../provisioning/errors.js';
import { CustodyError } from '../custody/errors.js';
import type { Logger } from '../observability/logger.js';

/*
 * `joinkeep kek add` for a data directory. With the software keystore or PKCS#11 in the usual mode the KEK goes
 * through the opened custody (provisioning/keks.ts). In PKCS#11 trusted-KEK mode a KEK from a key file is created by
 * the Security Officer (custody/pkcs11/trusted-kek.ts) *before* the data directory is opened in this process — the
 * user's login of an open custody would keep the SO out — and the data directory is opened afterwards to check the
 * KEK is there and record the audit entry. A KEK that arrives wrapped is refused in that mode.
 */

export interface KekAddOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly logger?: Logger;
}

/** Adds a KEK from its clear value (the operator's key file). The buffer is zeroed. */
export async function addKekToDataDir(dataDir: string, label: string, key: Buffer, options: KekAddOptions = {}): Promise<void> {
  const env = options.env ?? process.env;
  const config = await loadConfig(dataDir);
  const custody = config.custody;
  if (custody.kind !== 'pkcs11' || custody.trustedKeks !== true) {
    await withDataDir(dataDir, options, (jk) => addKek({ custody: jk.custody, audit: jk.audit, actor: 'cli' }, label, key));
    return;
  }
  try {
    assertKekLabel(label);
    const tokens = [];
    for (const t of custody.tokens) {
      tokens.push({ label: t.label, pin: await readPin(dataDir, t, env), soPin: await readSoPin(dataDir, t, env), modulePath: t.module });
    }
    const { createTrustedKeks } = await import('../custody/pkcs11/index.js');
    try {
      createTrustedKeks(custody.module, tokens, label, key, new Date());
    } catch (error) {
      if (error instanceof CustodyError && error.code === 'KEY_EXISTS') {
        throw new ProvisioningError('KEK_EXISTS', `a KEK labelled "${label}" already exists; KEKs are never replaced in place — add the new one under a new label`);
      }
      throw error;
    }
  } finally {
    key.fill(0);
  }
  await withDataDir(dataDir, options, async (jk) => {
    // The opened custody (every token of the pool) must now see it as a KEK it can use.
    if (!(await jk.custody.hasKek(label))) throw new AppError('CONFIG_INVALID', `KEK "${label}" was created on the tokens but the custody does not see it; check \`joinkeep custody inventory\``);
    await jk.audit.appendAudit({ at: new Date(), actor: 'cli', action: 'kek.add', subject: `kek/${label}`, outcome: 'success', details: { bits: key.length * 8, trusted: true } });
  });
}

/** Adds a KEK that arrives wrapped under a KEK already in custody (a TS002 KeyEnvelope). */
export async function addWrappedKekToDataDir(dataDir: string, label: string, envelope: string, options: KekAddOptions = {}): Promise<void> {
  const config = await loadConfig(dataDir);
  refuseWrappedInTrustedMode(config, label);
  await withDataDir(dataDir, options, (jk) => addWrappedKek({ custody: jk.custody, audit: jk.audit, actor: 'cli' }, label, envelope));
}

function refuseWrappedInTrustedMode(config: JoinkeepConfig, label: string): void {
  if (config.custody.kind === 'pkcs11' && config.custody.trustedKeks === true) {
    throw new ProvisioningError(
      'KEK_NOT_TRUSTABLE',
      `KEK "${label}" cannot be added from an envelope in trusted-KEK mode: only the Security Officer can mark a KEK trusted, and only one it creates from its clear value (it cannot unwrap under the user's KEKs, nor mark an unwrapped key afterwards). Add it with --key-file; nothing was changed`,
    );
  }
}

async function withDataDir<T>(dataDir: string, options: KekAddOptions, use: (jk: Joinkeep) => Promise<T>): Promise<T> {
  const jk = await openJoinkeep(dataDir, { env: options.env, logger: options.logger });
  try {
    return await use(jk);
  } finally {
    await jk.close();
  }
}
