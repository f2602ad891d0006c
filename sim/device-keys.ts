import { aes128EcbEncrypt } from '../src/custody/primitives.js';
import {
  type Eui64,
  type NetId,
  legacySessionKeyBlock,
  lifetimeKeyBlock,
  lorawan11SessionKeyBlock,
} from '../src/protocol/index.js';

/*
 * Device-side key derivation (LoRaWAN 1.0.3 §6.2.5, 1.1 §6.1.1.3 and §6.2.3.2). The device holds its root
 * keys in clear, as a real end device (or its secure element) does.
 */

export interface RootKeys {
  readonly appKey: Buffer;
  /** LoRaWAN 1.1 devices only. */
  readonly nwkKey?: Buffer | undefined;
}

/**
 * Session keys as the device holds them. In the legacy scheme (1.0.x, or a 1.1 device answered with
 * OptNeg=0) FNwkSIntKey = SNwkSIntKey = NwkSEncKey = NwkSKey (LoRaWAN 1.1 §6.2.3.1).
 */
export type SessionKeys =
  | { readonly scheme: 'legacy'; readonly nwkSKey: Buffer; readonly appSKey: Buffer }
  | {
      readonly scheme: 'lorawan11';
      readonly fNwkSIntKey: Buffer;
      readonly sNwkSIntKey: Buffer;
      readonly nwkSEncKey: Buffer;
      readonly appSKey: Buffer;
    };

export function jsIntKey(nwkKey: Buffer, devEui: Eui64): Buffer {
  return aes128EcbEncrypt(nwkKey, lifetimeKeyBlock('JSIntKey', devEui));
}

export function jsEncKey(nwkKey: Buffer, devEui: Eui64): Buffer {
  return aes128EcbEncrypt(nwkKey, lifetimeKeyBlock('JSEncKey', devEui));
}

/** `root` is the AppKey of a 1.0.x device, or the NwkKey of a 1.1 device answered with OptNeg=0 (AppSKey included). */
export function deriveLegacySessionKeys(root: Buffer, i: { joinNonce: number; netId: NetId; devNonce: number }): SessionKeys {
  return {
    scheme: 'legacy',
    nwkSKey: aes128EcbEncrypt(root, legacySessionKeyBlock('NwkSKey', i)),
    appSKey: aes128EcbEncrypt(root, legacySessionKeyBlock('AppSKey', i)),
  };
}

/** OptNeg=1: network keys from NwkKey, AppSKey from AppKey; `devNonce` is RJcount0/RJcount1 for rejoin answers. */
export function deriveLoRaWAN11SessionKeys(roots: Required<RootKeys>, i: { joinNonce: number; joinEui: Eui64; devNonce: number }): SessionKeys {
  return {
    scheme: 'lorawan11',
    fNwkSIntKey: aes128EcbEncrypt(roots.nwkKey, lorawan11SessionKeyBlock('FNwkSIntKey', i)),
    sNwkSIntKey: aes128EcbEncrypt(roots.nwkKey, lorawan11SessionKeyBlock('SNwkSIntKey', i)),
    nwkSEncKey: aes128EcbEncrypt(roots.nwkKey, lorawan11SessionKeyBlock('NwkSEncKey', i)),
    appSKey: aes128EcbEncrypt(roots.appKey, lorawan11SessionKeyBlock('AppSKey', i)),
  };
}

/** The SNwkSIntKey that MACs type 0/2 Rejoin-requests (LoRaWAN 1.1 §6.2.4.1). */
export function sNwkSIntKeyOf(keys: SessionKeys): Buffer {
  return keys.scheme === 'legacy' ? keys.nwkSKey : keys.sNwkSIntKey;
}

export function sessionKeysToHex(keys: SessionKeys): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(keys)) if (Buffer.isBuffer(value)) out[name] = value.toString('hex').toUpperCase();
  return out;
}
