import { parseHex, reversed, toHex } from './hex.js';

/** NetID (3 bytes) in canonical text form: 6 upper-case hex digits, big-endian. */
export type NetId = string & { readonly __brand: 'NetId' };

export function netIdFromBeHex(text: unknown, field = 'NetID'): NetId {
  return toHex(parseHex(text, field, 3)) as NetId;
}

export function netIdFromLeBytes(bytes: Uint8Array): NetId {
  return toHex(reversed(bytes)) as NetId;
}

export function netIdToLeBytes(netId: NetId): Buffer {
  return Buffer.from(netId, 'hex').reverse();
}
