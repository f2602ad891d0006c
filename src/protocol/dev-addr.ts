import { parseHex, reversed, toHex } from './hex.js';

/** DevAddr (4 bytes) in canonical text form: 8 upper-case hex digits, big-endian. */
export type DevAddr = string & { readonly __brand: 'DevAddr' };

export function devAddrFromBeHex(text: unknown, field = 'DevAddr'): DevAddr {
  return toHex(parseHex(text, field, 4)) as DevAddr;
}

export function devAddrFromLeBytes(bytes: Uint8Array): DevAddr {
  return toHex(reversed(bytes)) as DevAddr;
}

export function devAddrToLeBytes(devAddr: DevAddr): Buffer {
  return Buffer.from(devAddr, 'hex').reverse();
}
