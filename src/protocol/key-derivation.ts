import { type Eui64, eui64ToLeBytes } from './eui64.js';
import { type NetId, netIdToLeBytes } from './net-id.js';
import { assertUint24 } from './ranges.js';
import { assertUint16 } from './ranges.js';

/*
 * Every LoRaWAN session and lifetime key is one AES-128-ECB encryption of a 16-byte block under a root key.
 * These functions build the blocks; key custody runs the AES (software keystore or HSM), so no key passes here.
 */

/** LoRaWAN 1.0.x session keys (1.0.3 §6.2.5), also used by a 1.1 device answered with OptNeg=0 (root NwkKey). */
export const LEGACY_SESSION_KEY_PREFIX = { NwkSKey: 0x01, AppSKey: 0x02 } as const;
export type LegacySessionKey = keyof typeof LEGACY_SESSION_KEY_PREFIX;

export interface LegacyDerivationInput {
  readonly joinNonce: number;
  readonly netId: NetId;
  readonly devNonce: number;
}

/** prefix | JoinNonce(3) | NetID(3) | DevNonce(2) | 7 zero bytes. */
export function legacySessionKeyBlock(key: LegacySessionKey, i: LegacyDerivationInput): Buffer {
  assertUint24(i.joinNonce, 'JoinNonce');
  assertUint16(i.devNonce, 'DevNonce');
  const b = Buffer.alloc(16);
  b[0] = LEGACY_SESSION_KEY_PREFIX[key];
  b.writeUIntLE(i.joinNonce, 1, 3);
  netIdToLeBytes(i.netId).copy(b, 4);
  b.writeUInt16LE(i.devNonce, 7);
  return b;
}

/** LoRaWAN 1.1 session keys with OptNeg=1 (1.1 §6.2.3.2): AppSKey from AppKey, the others from NwkKey. */
export const LORAWAN11_SESSION_KEY_PREFIX = { FNwkSIntKey: 0x01, AppSKey: 0x02, SNwkSIntKey: 0x03, NwkSEncKey: 0x04 } as const;
export type LoRaWAN11SessionKey = keyof typeof LORAWAN11_SESSION_KEY_PREFIX;

export interface LoRaWAN11DerivationInput {
  readonly joinNonce: number;
  readonly joinEui: Eui64;
  /** DevNonce for a Join-request; RJcount0 or RJcount1 for a Rejoin-request answer. */
  readonly devNonce: number;
}

/** prefix | JoinNonce(3) | JoinEUI(8) | DevNonce(2) | 2 zero bytes. */
export function lorawan11SessionKeyBlock(key: LoRaWAN11SessionKey, i: LoRaWAN11DerivationInput): Buffer {
  assertUint24(i.joinNonce, 'JoinNonce');
  assertUint16(i.devNonce, 'DevNonce');
  const b = Buffer.alloc(16);
  b[0] = LORAWAN11_SESSION_KEY_PREFIX[key];
  b.writeUIntLE(i.joinNonce, 1, 3);
  eui64ToLeBytes(i.joinEui).copy(b, 4);
  b.writeUInt16LE(i.devNonce, 12);
  return b;
}

/** LoRaWAN 1.1 lifetime keys (1.1 §6.1.1.3), derived from NwkKey: prefix | DevEUI(8) | 7 zero bytes. */
export const LIFETIME_KEY_PREFIX = { JSEncKey: 0x05, JSIntKey: 0x06 } as const;
export type LifetimeKey = keyof typeof LIFETIME_KEY_PREFIX;

export function lifetimeKeyBlock(key: LifetimeKey, devEui: Eui64): Buffer {
  const b = Buffer.alloc(16);
  b[0] = LIFETIME_KEY_PREFIX[key];
  eui64ToLeBytes(devEui).copy(b, 1);
  return b;
}
