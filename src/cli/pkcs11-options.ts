import type { Command } from 'commander';
import { resolve } from 'node:path';
import { UsageError } from './context.js';

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** The token options as commander parses them (see addTokenOptions). */
export interface TokenFlags {
  pkcs11Module?: string;
  tokenLabel: string[];
  pinFile: string[];
  pinEnv: string[];
  trustedKeks?: boolean;
  soPinFile?: string[];
  soPinEnv?: string[];
}

/** --pkcs11-module and the repeatable --token-label/--pin-file/--pin-env, shared by `init` and `custody migrate`. */
export function addTokenOptions(command: Command, options: { moduleRequired?: boolean } = {}): Command {
  const module = ['--pkcs11-module <path>', 'PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so'] as const;
  return (options.moduleRequired ? command.requiredOption(...module) : command.option(...module))
    .option('--token-label <label>', 'HSM token label (repeat for a pool of HSMs, each with its --pin-file or --pin-env)', collect, [])
    .option('--pin-file <file>', 'file holding the PIN of the token named by the matching --token-label', collect, [])
    .option('--pin-env <var>', 'environment variable holding the PIN of the matching --token-label', collect, []);
}

/** Pairs each --token-label with the PIN source given for it, in order; PINs never appear on the command line. */
export function pkcs11Custody(o: TokenFlags & { custody: string }) {
  const soPinFile = o.soPinFile ?? [];
  const soPinEnv = o.soPinEnv ?? [];
  if (o.custody === 'software') {
    if (o.pkcs11Module || o.tokenLabel.length > 0) throw new UsageError('--pkcs11-module and --token-label go with --custody pkcs11');
    if (o.trustedKeks || soPinFile.length + soPinEnv.length > 0) throw new UsageError('--trusted-keks, --so-pin-file and --so-pin-env go with --custody pkcs11');
    return undefined;
  }
  if (o.custody !== 'pkcs11') throw new UsageError('--custody must be software or pkcs11');
  if (!o.pkcs11Module) throw new UsageError('--custody pkcs11 needs --pkcs11-module PATH (the HSM vendor\'s PKCS#11 library)');
  if (o.tokenLabel.length === 0) throw new UsageError('--custody pkcs11 needs at least one --token-label with its --pin-file or --pin-env');
  if (o.pinFile.length + o.pinEnv.length !== o.tokenLabel.length || (o.pinFile.length > 0 && o.pinEnv.length > 0)) {
    throw new UsageError('give one --pin-file (or one --pin-env) per --token-label, in the same order');
  }
  if (!o.trustedKeks && soPinFile.length + soPinEnv.length > 0) throw new UsageError('--so-pin-file and --so-pin-env go with --trusted-keks');
  if (o.trustedKeks && (soPinFile.length + soPinEnv.length !== o.tokenLabel.length || (soPinFile.length > 0 && soPinEnv.length > 0))) {
    throw new UsageError('--trusted-keks needs the Security Officer PIN of each token: one --so-pin-file (or one --so-pin-env) per --token-label, in the same order');
  }
  const tokens = o.tokenLabel.map((label, i) => {
    const pin = o.pinFile.length > 0 ? { pinFile: resolve(o.pinFile[i]!) } : { pinEnv: o.pinEnv[i]! };
    if (!o.trustedKeks) return { label, ...pin };
    return { label, ...pin, ...(soPinFile.length > 0 ? { soPinFile: resolve(soPinFile[i]!) } : { soPinEnv: soPinEnv[i]! }) };
  });
  return { kind: 'pkcs11' as const, module: resolve(o.pkcs11Module), tokens, ...(o.trustedKeks ? { trustedKeks: true } : {}) };
}
