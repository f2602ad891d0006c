import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';

/*
 * Key files as the README's worked example uses them: 32 hex digits (one AES-128 key), optional trailing
 * newline. The simulators hold test keys because they play the device and the peers; these helpers never
 * print a key.
 */

const KEY_HEX = /^(?:0[xX])?([0-9a-fA-F]{32})$/;

export class KeyFileError extends Error {
  override readonly name = 'KeyFileError';
}

export function parseKeyHex(text: string, what: string): Buffer {
  const m = KEY_HEX.exec(text.trim());
  if (!m?.[1]) throw new KeyFileError(`${what} must hold exactly 32 hex digits (an AES-128 key)`);
  return Buffer.from(m[1], 'hex');
}

export function readKeyFile(path: string, what = path): Buffer {
  return parseKeyHex(readFileSync(path, 'utf8'), what);
}

/** Bearer tokens are opaque text; surrounding whitespace and the trailing newline are not part of them. */
export function readTokenFile(path: string): string {
  const token = readFileSync(path, 'utf8').trim();
  if (token === '') throw new KeyFileError(`token file ${path} is empty`);
  return token;
}

/** Writes a fresh random AES-128 key as hex; mode 0600 because it is secret even when it is a test key. */
export function writeRandomKeyFile(path: string): void {
  writeFileSync(path, `${randomBytes(16).toString('hex').toUpperCase()}\n`, { mode: 0o600, flag: 'wx' });
}
