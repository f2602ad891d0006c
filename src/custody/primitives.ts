import { type KeyObject, createCipheriv, createDecipheriv, timingSafeEqual } from 'node:crypto';

/** A raw AES key, or a KeyObject so a keystore can keep keys out of the JS heap. */
export type AesKey = Uint8Array | KeyObject;

/*
 * AES, AES-CMAC and AES key wrap on node:crypto (OpenSSL). Node has no CMAC API, so RFC 4493 is composed
 * here from AES-128-ECB and AES-128-CBC; AES itself is never reimplemented. Used by the software keystore
 * and by the simulators (which play the device and the peers, and so hold keys).
 */

const ZERO_BLOCK = Buffer.alloc(16);
const RFC3394_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');

export function aes128EcbEncrypt(key: AesKey, data: Uint8Array): Buffer {
  const c = createCipheriv('aes-128-ecb', key, null).setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

export function aes128EcbDecrypt(key: AesKey, data: Uint8Array): Buffer {
  const d = createDecipheriv('aes-128-ecb', key, null).setAutoPadding(false);
  return Buffer.concat([d.update(data), d.final()]);
}

/** RFC 4493 §2.3: K1, K2 from L = AES(K, 0^128), doubled in GF(2^128). */
function cmacSubkey(block: Buffer): Buffer {
  const out = Buffer.alloc(16);
  let carry = 0;
  for (let i = 15; i >= 0; i--) {
    const b = block[i] ?? 0;
    out[i] = ((b << 1) | carry) & 0xff;
    carry = b >> 7;
  }
  if (carry) out[15] = (out[15] ?? 0) ^ 0x87;
  return out;
}

/** AES-CMAC (RFC 4493) with a 128-bit key; returns the full 16-byte tag. */
export function aesCmac(key: AesKey, message: Uint8Array): Buffer {
  const k1 = cmacSubkey(aes128EcbEncrypt(key, ZERO_BLOCK));
  const complete = message.length > 0 && message.length % 16 === 0;
  const n = Math.max(1, Math.ceil(message.length / 16));
  const last = Buffer.alloc(16);
  const tail = message.subarray((n - 1) * 16);
  last.set(tail);
  const sub = complete ? k1 : cmacSubkey(k1);
  if (!complete) last[tail.length] = 0x80;
  for (let i = 0; i < 16; i++) last[i] = (last[i] ?? 0) ^ (sub[i] ?? 0);
  const cbc = createCipheriv('aes-128-cbc', key, ZERO_BLOCK).setAutoPadding(false);
  if (n > 1) cbc.update(message.subarray(0, (n - 1) * 16));
  // CBC-MAC: the tag is the last ciphertext block.
  return cbc.update(last).subarray(-16);
}

export function micEquals(computed: Uint8Array, received: Uint8Array): boolean {
  return received.length === 4 && timingSafeEqual(computed.subarray(0, 4), received);
}

/** RFC 3394 AES key wrap with the default IV, via OpenSSL's id-aesNNN-wrap. */
export function aesKeyWrap(kek: AesKey, key: Uint8Array): Buffer {
  const c = createCipheriv(wrapAlgorithm(kek), kek, RFC3394_IV);
  return Buffer.concat([c.update(key), c.final()]);
}

/** RFC 3394 unwrap; throws when the integrity check fails (wrong KEK or corrupted data). */
export function aesKeyUnwrap(kek: AesKey, wrapped: Uint8Array): Buffer {
  const d = createDecipheriv(wrapAlgorithm(kek), kek, RFC3394_IV);
  return Buffer.concat([d.update(wrapped), d.final()]);
}

function wrapAlgorithm(kek: AesKey): string {
  switch (kek instanceof Uint8Array ? kek.length : kek.symmetricKeySize) {
    case 16: return 'id-aes128-wrap';
    case 24: return 'id-aes192-wrap';
    case 32: return 'id-aes256-wrap';
    default: throw new RangeError('KEK must be 16, 24 or 32 bytes');
  }
}
