import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type KeyCustody, type KeyInfo, kekHandle } from '../custody/custody.js';
import { SoftwareKeyCustody } from '../custody/software/keystore.js';
import { CONFIG_FILE, type CustodyConfig, type JoinkeepConfig, loadConfig } from './config.js';
import { AppError } from './errors.js';
import { openJoinkeep } from './joinkeep.js';
import { openPkcs11 } from './pkcs11.js';
import type { Logger } from '../observability/logger.js';

export interface CustodyMigration {
  /** Keys unwrapped into the HSM by this run. */
  readonly migrated: readonly string[];
  /** Keys an earlier, interrupted run had already moved (checked like the others). */
  readonly alreadyPresent: readonly string[];
  /** Root keys and KEKs whose behaviour was compared between both custodies. */
  readonly verified: number;
  /**
   * Receiving keys of the software keystore, not moved: an RSA private key leaves the keystore for nobody. They are
   * retired with the rest of the sealed records; create a new one in the HSM and publish it to makers again.
   */
  readonly retiredReceivingKeys: readonly string[];
}

/**
 * `joinkeep custody migrate`: moves every key of a software-keystore data directory into PKCS#11 tokens.
 * Keys travel only wrapped: a one-time AES-256 transport KEK is created in the token, each key is wrapped under
 * it by the software keystore and unwrapped straight into the token (C_UnwrapKey), then the transport KEK is
 * destroyed. Every moved key is checked by doing the same operation in both custodies; only then does
 * joinkeep.json switch to PKCS#11 and are the sealed copies removed from the database. An interrupted run can
 * be repeated: keys already in the token are verified, not imported again.
 */
export async function migrateToPkcs11(
  dataDir: string,
  target: Extract<CustodyConfig, { kind: 'pkcs11' }>,
  options: { env?: NodeJS.ProcessEnv; logger?: Logger } = {},
): Promise<CustodyMigration> {
  const env = options.env ?? process.env;
  const config = await loadConfig(dataDir);
  if (config.custody.kind !== 'software') throw new AppError('CONFIG_INVALID', `${dataDir} already keeps its keys in PKCS#11 tokens`);
  // KEKs travel wrapped under a transport KEK, and an unwrapped KEK can never become trusted (docs/security.md).
  if (target.trustedKeks === true) {
    throw new AppError('CONFIG_INVALID', 'custody migrate cannot move keys into trusted-KEK mode: KEKs arrive wrapped and could never be trusted; nothing was changed');
  }
  const jk = await openJoinkeep(dataDir, { env, logger: options.logger });
  try {
    const software = jk.custody;
    if (!(software instanceof SoftwareKeyCustody)) throw new AppError('CONFIG_INVALID', 'the data directory does not use the software keystore');
    const all = await software.listKeys();
    const keys = all.filter((k) => k.usage !== 'receiving');
    const retiredReceivingKeys = all.filter((k) => k.usage === 'receiving').map((k) => k.handle);
    const hsm = await openPkcs11(dataDir, target, env);
    let moved: Awaited<ReturnType<typeof moveKeys>>;
    try {
      moved = await moveKeys(software, hsm, keys);
    } finally {
      await hsm.close();
    }
    // Each token of a pool is checked on its own: every one must hold every key and behave as the software keystore.
    let verified = 0;
    for (const token of target.tokens) {
      const one = await openPkcs11(dataDir, { ...target, tokens: [token] }, env);
      try {
        verified += await verifyKeys(software, one, keys);
      } finally {
        await one.close();
      }
    }
    const result: CustodyMigration = { ...moved, verified, retiredReceivingKeys };
    await switchConfig(dataDir, config, target);
    for (const key of await jk.storage.listKeyRecords()) await jk.storage.deleteKeyRecord(key.handle);
    await jk.audit.appendAudit({
      at: new Date(),
      actor: 'cli',
      action: 'custody.migrate',
      subject: 'custody',
      outcome: 'success',
      details: { to: 'pkcs11', tokens: target.tokens.map((t) => t.label), migrated: result.migrated.length, alreadyPresent: result.alreadyPresent.length, verified: result.verified, retiredReceivingKeys },
    });
    return result;
  } finally {
    await jk.close();
  }
}

async function moveKeys(software: SoftwareKeyCustody, hsm: KeyCustody, keys: readonly KeyInfo[]) {
  const migrated: string[] = [];
  const alreadyPresent: string[] = [];
  const transportLabel = `joinkeep-migration-${randomBytes(8).toString('hex')}`;
  const transport = randomBytes(32);
  await hsm.importKek(transportLabel, transport);
  try {
    for (const key of keys) {
      if (await hsm.hasKey(key.handle)) {
        alreadyPresent.push(key.handle);
        continue;
      }
      const { usage, wrapped } = await software.wrapForTransfer(key.handle, transport);
      await hsm.importWrapped(key.handle, usage, wrapped, transportLabel);
      migrated.push(key.handle);
    }
  } finally {
    transport.fill(0);
    await hsm.deleteKey(kekHandle(transportLabel));
  }
  return { migrated, alreadyPresent };
}

/** Same inputs, same outputs in both custodies: a MIC for each root key, a key wrap for each KEK. */
async function verifyKeys(software: KeyCustody, hsm: KeyCustody, keys: readonly KeyInfo[]): Promise<number> {
  const roots = keys.filter((k) => k.usage === 'root');
  let verified = 0;
  for (const key of roots) {
    const message = randomBytes(32);
    const [a, b] = await Promise.all([software.computeMic({ handle: key.handle }, message), hsm.computeMic({ handle: key.handle }, message)]);
    if (!a.equals(b)) throw new AppError('MIGRATION_FAILED', `key ${key.handle} does not behave the same in the token; the data directory is unchanged`);
    verified++;
  }
  const probe = roots[0];
  for (const key of keys.filter((k) => k.usage === 'kek')) {
    // A KEK is checked by wrapping the same derived key under it in both custodies (needs one root key).
    if (probe === undefined) break;
    const label = key.handle.replace(/^kek\//, '');
    const block = randomBytes(16);
    const [[a], [b]] = await Promise.all([
      software.deriveAndExport(probe.handle, [{ block, to: { kekLabel: label } }]),
      hsm.deriveAndExport(probe.handle, [{ block, to: { kekLabel: label } }]),
    ]);
    if (!a!.key.equals(b!.key)) throw new AppError('MIGRATION_FAILED', `KEK ${label} does not behave the same in the token; the data directory is unchanged`);
    verified++;
  }
  return verified;
}

/** joinkeep.json is replaced atomically (write, then rename). */
async function switchConfig(dataDir: string, config: JoinkeepConfig, target: Extract<CustodyConfig, { kind: 'pkcs11' }>): Promise<void> {
  const path = join(dataDir, CONFIG_FILE);
  const next = `${path}.migrating`;
  await writeFile(next, `${JSON.stringify({ ...config, custody: target }, null, 2)}\n`, { mode: 0o600 });
  await rename(next, path);
}
