import type { JsonWebKeyRsaPublic, KeyCustody } from '../custody/custody.js';
import type { TrustedKekToken } from '../custody/pkcs11/index.js';
import { type ExportInput, exportTransfer } from '../provisioning/transfer.js';
import type { Logger } from '../observability/logger.js';
import { type SoPinSource, loadConfig } from './config.js';
import { AppError } from './errors.js';
import { openConfiguredStorage, openJoinkeep } from './joinkeep.js';
import { readPin, readSoPin } from './pkcs11.js';

/*
 * `joinkeep transfer export` for a data directory (provisioning/transfer.ts). With the software keystore, or PKCS#11
 * outside trusted-KEK mode, the opened custody seals the keys (PKCS#11 refuses: its root keys are not extractable).
 * In PKCS#11 trusted-KEK mode root keys can be wrapped only under a key the Security Officer made trusted, and an SO
 * login logs the user out of every session of the process: so the custody is never opened here. Only the storage is;
 * the keys are sealed on one token in a session of its own (custody/pkcs11/trusted-export.ts), as `kek add` creates
 * trusted KEKs before it opens the data directory.
 */

export interface TransferExportOptions {
  /** The SO PIN of each token, in the order of the configuration; default: the sources `init --trusted-keks` recorded. */
  readonly soPins?: readonly SoPinSource[] | undefined;
  readonly env?: NodeJS.ProcessEnv;
  readonly logger?: Logger;
}

export async function exportTransferFromDataDir(dataDir: string, input: ExportInput, options: TransferExportOptions = {}): Promise<{ file: Buffer; batchId: string; devices: number }> {
  const env = options.env ?? process.env;
  const config = await loadConfig(dataDir);
  const custody = config.custody;
  const trusted = custody.kind === 'pkcs11' && custody.trustedKeks === true;
  if (options.soPins !== undefined && options.soPins.length > 0) {
    if (!trusted) {
      throw new AppError('CONFIG_INVALID', '--so-pin-file / --so-pin-env are for PKCS#11 data directories in trusted-KEK mode (`init --trusted-keks`); this one does not need the Security Officer');
    }
    if (options.soPins.length !== custody.tokens.length) {
      throw new AppError('CONFIG_INVALID', `give one --so-pin-file (or one --so-pin-env) per token of the data directory, in its order: ${custody.tokens.map((t) => `"${t.label}"`).join(', ')}`);
    }
  }
  if (custody.kind !== 'pkcs11' || custody.trustedKeks !== true) {
    const jk = await openJoinkeep(dataDir, { env, logger: options.logger });
    try {
      return await exportTransfer({ storage: jk.storage, custody: jk.custody, actor: 'cli' }, input);
    } finally {
      await jk.close();
    }
  }
  const tokens: TrustedKekToken[] = [];
  for (const [i, t] of custody.tokens.entries()) {
    const so = options.soPins?.[i] ?? t;
    tokens.push({ label: t.label, pin: await readPin(dataDir, t, env), soPin: await readSoPin(dataDir, { label: t.label, ...so }, env), ...(t.module === undefined ? {} : { modulePath: t.module }) });
  }
  const { exportSealedTrusted } = await import('../custody/pkcs11/index.js');
  const sealer: Pick<KeyCustody, 'exportSealed'> = {
    exportSealed: async (recipient: JsonWebKeyRsaPublic, oaep, handles) => exportSealedTrusted(custody.module, tokens, recipient, oaep, handles),
  };
  const storage = await openConfiguredStorage(dataDir, config, env);
  try {
    await storage.migrate();
    return await exportTransfer({ storage, custody: sealer, actor: 'cli' }, input);
  } finally {
    await storage.close();
  }
}
