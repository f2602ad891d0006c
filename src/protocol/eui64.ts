import { parseHex, reversed, toHex } from './hex.js';

/** EUI-64 in canonical text form: 16 upper-case hex digits, most significant byte first. */
export type Eui64 = string & { readonly __brand: 'Eui64' };

export function eui64FromBeHex(text: unknown, field = 'EUI-64'): Eui64 {
  return toHex(parseHex(text, field, 8)) as Eui64;
}

export function eui64FromLeBytes(bytes: Uint8Array): Eui64 {
  return toHex(reversed(bytes)) as Eui64;
}

/** Over the air every EUI is little-endian (LoRaWAN 1.0.3 §6.2.4, 1.1 §6.2.2). */
export function eui64ToLeBytes(eui: Eui64): Buffer {
  return Buffer.from(eui, 'hex').reverse();
}
