import { readFile } from 'node:fs/promises';
import type { KeyCustody } from '../custody/custody.js';
import { type CustodyConfig, type PinSource, resolveIn } from './config.js';
import type { Logger } from '../observability/logger.js';
import { AppError } from './errors.js';

/**
 * Opens PKCS#11 custody for a data directory, reading each token's PIN from its file or variable. Pool events
 * (a token taken out of service, readmitted, a write undone) go to the log.
 */
export async function openPkcs11(dataDir: string, custody: Extract<CustodyConfig, { kind: 'pkcs11' }>, env: NodeJS.ProcessEnv, logger?: Logger): Promise<KeyCustody> {
  const tokens = [];
  for (const t of custody.tokens) tokens.push({ label: t.label, pin: await readPin(dataDir, t, env), modulePath: t.module });
  // Loaded only for PKCS#11 data directories: the software keystore never loads the native module.
  const { openPkcs11Custody } = await import('../custody/pkcs11/index.js');
  return openPkcs11Custody(
    { modulePath: custody.module, tokens, trustedKeks: custody.trustedKeks === true },
    {
      workers: custody.workers,
      maxQueue: custody.maxQueue,
      healthIntervalMs: custody.healthIntervalMs,
      operationTimeoutMs: custody.operationTimeoutMs,
      onEvent: (event) => {
        if (event.kind === 'member-readmitted') logger?.info({ custodyEvent: event }, `HSM token "${event.member}" is back in service`);
        else logger?.warn({ custodyEvent: event }, `HSM pool: ${event.kind} "${event.member}"`);
      },
    },
  );
}

export async function readPin(dataDir: string, t: { readonly label: string } & PinSource, env: NodeJS.ProcessEnv): Promise<string> {
  if ('pinEnv' in t) {
    const pin = env[t.pinEnv];
    if (pin === undefined || pin === '') throw new AppError('CONFIG_INVALID', `the PIN of token "${t.label}" comes from $${t.pinEnv}, which is not set`);
    return pin;
  }
  const path = resolveIn(dataDir, t.pinFile);
  const text = await readFile(path, 'utf8').catch(() => {
    throw new AppError('CONFIG_INVALID', `the PIN file of token "${t.label}" (${path}) cannot be read`);
  });
  const pin = text.split(/\r?\n/)[0]?.trim() ?? '';
  if (pin === '') throw new AppError('CONFIG_INVALID', `the PIN file of token "${t.label}" (${path}) is empty`);
  return pin;
}

/** The Security Officer's PIN of a token in trusted-KEK mode, from its file or variable. */
export async function readSoPin(dataDir: string, t: { readonly label: string; readonly soPinFile?: string; readonly soPinEnv?: string }, env: NodeJS.ProcessEnv): Promise<string> {
  const source = t.soPinEnv !== undefined ? { pinEnv: t.soPinEnv } : t.soPinFile !== undefined ? { pinFile: t.soPinFile } : undefined;
  if (source === undefined) throw new AppError('CONFIG_INVALID', `token "${t.label}" has no Security Officer PIN source (soPinFile or soPinEnv)`);
  try {
    return await readPin(dataDir, { label: t.label, ...source }, env);
  } catch (error) {
    // Same checks as the user PIN; the message says which PIN is missing.
    if (error instanceof AppError) throw new AppError('CONFIG_INVALID', error.message.replace('the PIN', 'the Security Officer PIN'));
    throw error;
  }
}
