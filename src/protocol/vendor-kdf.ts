import { type Eui64, eui64FromBeHex } from './eui64.js';

/*
 * JK-KDF-1, Joinkeep's vendor key derivation (docs/specs/sealed-batch.md §JK-KDF-1): a device's root key is one
 * AES-128 encryption, under the vendor's derivation master key, of
 *   kind (1 byte: 0x01 AppKey, 0x02 NwkKey) ‖ DevEUI (8 bytes, MSB first) ‖ ASCII "JK-KDF1" (7 bytes).
 * One block, like LoRaWAN 1.1's JSIntKey/JSEncKey, so a PKCS#11 token derives it as a key object
 * (CKM_AES_ECB_ENCRYPT_DATA, or CKM_AES_CBC_ENCRYPT_DATA with a zero IV) and the value never leaves custody.
 * Unlike the LoRaWAN blocks, the DevEUI is big-endian here: this is our own format, written as people write EUIs.
 */

export const VENDOR_KDF_PREFIX = { AppKey: 0x01, NwkKey: 0x02 } as const;
export type VendorKdfKey = keyof typeof VENDOR_KDF_PREFIX;

/** "JK-KDF1": domain separation from every LoRaWAN block, which ends in zero padding. */
export const VENDOR_KDF_LABEL = Buffer.from('JK-KDF1', 'ascii');

/** The 16-byte block whose AES-128 encryption under the master key is the device's AppKey or NwkKey. */
export function vendorKdfInput(devEui: Eui64 | string, key: VendorKdfKey): Buffer {
  const prefix = VENDOR_KDF_PREFIX[key];
  if (prefix === undefined) throw new TypeError(`vendorKdfInput: unknown key ${String(key)}`);
  const b = Buffer.alloc(16);
  b[0] = prefix;
  Buffer.from(eui64FromBeHex(devEui, 'DevEUI'), 'hex').copy(b, 1);
  VENDOR_KDF_LABEL.copy(b, 9);
  return b;
}
