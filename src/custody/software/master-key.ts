import { randomBytes } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import { CustodyError } from '../errors.js';

/*
 * The software keystore's master key: 32 random bytes, hex in a 0600 file created by `joinkeep init`,
 * or in an environment variable (for deployments that inject secrets, and for several instances sharing
 * one PostgreSQL). Every key at rest is sealed under it with AES-256-GCM.
 */

export const MASTER_KEY_ENV = 'JOINKEEP_MASTER_KEY';

export type MasterKeySource = { readonly file: string } | { readonly env: string };

/** Creates a new master key file with mode 0600; refuses to overwrite an existing one. */
export async function createMasterKeyFile(path: string): Promise<void> {
  const key = randomBytes(32);
  const handle = await open(path, 'wx', 0o600);
  try {
    await handle.writeFile(`${key.toString('hex')}\n`);
    await handle.sync();
  } finally {
    await handle.close();
    key.fill(0);
  }
}

export async function loadMasterKey(source: MasterKeySource, env: NodeJS.ProcessEnv = process.env): Promise<Buffer> {
  if ('env' in source) {
    const text = env[source.env];
    if (text === undefined) throw new CustodyError('MASTER_KEY_INVALID', `environment variable ${source.env} is not set; it must hold the 64-hex-digit master key`);
    return parseMasterKey(text, `environment variable ${source.env}`);
  }
  const info = await stat(source.file).catch(() => {
    throw new CustodyError('MASTER_KEY_INVALID', `master key file ${source.file} is missing; run \`joinkeep init\` or set ${MASTER_KEY_ENV}`);
  });
  if ((info.mode & 0o077) !== 0) {
    throw new CustodyError('MASTER_KEY_INVALID', `master key file ${source.file} is readable by group or others; run \`chmod 600 ${source.file}\``);
  }
  return parseMasterKey(await readFile(source.file, 'utf8'), `master key file ${source.file}`);
}

function parseMasterKey(text: string, where: string): Buffer {
  const hex = text.trim();
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new CustodyError('MASTER_KEY_INVALID', `${where} must hold exactly 64 hex digits (a 256-bit key)`);
  return Buffer.from(hex, 'hex');
}
