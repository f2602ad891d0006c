import type { KeyHandle, OaepHash } from './custody.js';
import { CustodyError } from './errors.js';

/*
 * Checks shared by every custody's importSealed / importDerived, so that they refuse the same inputs the same way
 * before any key is touched.
 */

/** The node:crypto / OpenSSL name of an OAEP hash; MECHANISM_UNSUPPORTED for anything else. */
export function oaepHashOf(oaep: OaepHash): 'sha1' | 'sha256' {
  if (oaep === 'sha1' || oaep === 'sha256') return oaep;
  throw new CustodyError('MECHANISM_UNSUPPORTED', `RSA-OAEP with hash "${String(oaep)}" is not supported; sealed batches use "sha1" (RSA-OAEP) or "sha256" (RSA-OAEP-256)`);
}

/**
 * Every handle named once (KEY_EXISTS otherwise: the batch would store two keys under one name), and each key a
 * root key or a derivation master (INVALID_KEY otherwise).
 */
export function checkBatchHandles(keys: readonly { readonly handle: KeyHandle; readonly usage: string }[]): void {
  const seen = new Set<KeyHandle>();
  for (const { handle, usage } of keys) {
    if (typeof handle !== 'string' || handle.length === 0) throw new CustodyError('INVALID_KEY', 'every key of a batch needs a handle');
    if (usage !== 'root' && usage !== 'derivation') throw new CustodyError('INVALID_KEY', `${handle}: a batch carries root keys and derivation master keys only, not ${String(usage)} keys`);
    if (seen.has(handle)) throw new CustodyError('KEY_EXISTS', `the batch names ${handle} twice; nothing was imported`);
    seen.add(handle);
  }
}

/** `items` in consecutive slices of at most `size`. */
export function chunked<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
