import { ProtocolError } from './errors.js';

const HEX = /^(?:0[xX])?([0-9a-fA-F]*)$/;

/**
 * Parses hex as TS002 allows it: optional `0x`, any case (TS002-1.0 §22.3).
 * `length` is the exact number of bytes expected, when fixed.
 */
export function parseHex(text: unknown, field: string, length?: number): Buffer {
  if (typeof text !== 'string') throw new ProtocolError('INVALID_HEX', `${field} must be a hex string`, field);
  const m = HEX.exec(text);
  const digits = m?.[1];
  if (digits === undefined || digits.length % 2 !== 0) {
    throw new ProtocolError('INVALID_HEX', `${field} is not valid hex`, field);
  }
  if (length !== undefined && digits.length !== length * 2) {
    throw new ProtocolError('INVALID_LENGTH', `${field} must be ${length} bytes, got ${digits.length / 2}`, field);
  }
  return Buffer.from(digits, 'hex');
}

/** Canonical hex we emit: upper case, no prefix (the form most TS002 peers and tools print). */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex').toUpperCase();
}

export function reversed(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes).reverse();
}
