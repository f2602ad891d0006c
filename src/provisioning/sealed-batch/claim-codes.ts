import { createHash, randomBytes } from 'node:crypto';
import { type Eui64, ProtocolError, eui64FromBeHex } from '../../protocol/index.js';
import { ProvisioningError } from '../errors.js';

/*
 * Claim codes: what a buyer types (or scans from the TR005 QR code's OwnerToken) to claim a device from the
 * maker's unclaimed inventory. 16 Crockford base32 characters = 80 random bits, printed in groups of four.
 * Joinkeep stores only claimCodeHash, so a leaked batch or database does not let anyone claim devices.
 */

/** Crockford base32: digits and letters without I, L, O, U (confusable with 1, 1, 0, V). */
export const CLAIM_CODE_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const CLAIM_CODE_LENGTH = 16;
export const CLAIM_CODE_BITS = CLAIM_CODE_LENGTH * 5;

/** A fresh claim code, grouped for printing: ABCD-EFGH-JKMN-PQRS. */
export function generateClaimCode(): string {
  // 10 random bytes = 80 bits = exactly 16 five-bit symbols, so every symbol is uniform.
  const bytes = randomBytes(CLAIM_CODE_BITS / 8);
  let bits = 0;
  let acc = 0;
  let code = '';
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      code += CLAIM_CODE_ALPHABET[(acc >> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  return groupClaimCode(code);
}

/** Groups of four joined by dashes, as printed on labels. */
export function groupClaimCode(normalized: string): string {
  return normalized.match(/.{1,4}/g)?.join('-') ?? '';
}

/**
 * The canonical form of a typed or scanned code: upper case, without dashes or spaces, and with Crockford's
 * decoding of look-alikes (O → 0, I and L → 1), so a code copied by hand still matches.
 */
export function normalizeClaimCode(text: string): string {
  const normalized = text
    .toUpperCase()
    .replace(/[\s-]/g, '')
    .replace(/O/g, '0')
    .replace(/[IL]/g, '1');
  if (normalized === '' || ![...normalized].every((c) => CLAIM_CODE_ALPHABET.includes(c))) {
    throw new ProvisioningError('INVALID_INPUT', 'a claim code holds only digits and the letters A–Z except I, L, O and U (dashes and spaces are ignored)');
  }
  return normalized;
}

/** Lower-case hex SHA-256 of UTF-8 "DEVEUI:CODE" (DevEUI canonical upper-case hex, code normalised). */
export function claimCodeHash(devEui: Eui64 | string, code: string): string {
  let eui: Eui64;
  try {
    eui = eui64FromBeHex(devEui, 'DevEUI');
  } catch (error) {
    if (error instanceof ProtocolError) throw new ProvisioningError('INVALID_INPUT', error.message);
    throw error;
  }
  return createHash('sha256').update(`${eui}:${normalizeClaimCode(code)}`, 'utf8').digest('hex');
}
