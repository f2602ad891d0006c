import assert from 'node:assert/strict';
import { createCipheriv } from 'node:crypto';
import { describe, it } from 'node:test';
import { aes128EcbEncrypt } from '../../src/custody/primitives.js';
import { ProtocolError, VENDOR_KDF_PREFIX, type VendorKdfKey, eui64FromBeHex, lifetimeKeyBlock, vendorKdfInput } from '../../src/protocol/index.js';
import { type VectorSource, cite, hex, loadVectors, toHexUpper, watchInputs } from '../helpers/vectors.js';

interface VendorKdfVector {
  name: string;
  source: VectorSource[];
  master: string;
  devEui: string;
  derived: Record<VendorKdfKey, { block: string; key: string }>;
}
const file = loadVectors<{ vectors: VendorKdfVector[] }>('vendor-kdf');

/** AES-128-ECB straight from node:crypto, independent of src/custody/primitives.ts. */
function nodeAesEcb(key: Buffer, block: Buffer): Buffer {
  const c = createCipheriv('aes-128-ecb', key, null).setAutoPadding(false);
  return Buffer.concat([c.update(block), c.final()]);
}

describe('JK-KDF-1 / vendor-derived root keys', () => {
  it('has at least three vectors, each for AppKey and NwkKey', () => {
    assert.ok(file.vectors.length >= 3);
    for (const v of file.vectors) assert.deepEqual(Object.keys(v.derived).sort(), ['AppKey', 'NwkKey']);
  });

  for (const v of file.vectors) {
    for (const key of Object.keys(VENDOR_KDF_PREFIX) as VendorKdfKey[]) {
      const expected = v.derived[key];
      it(`${key} / block = prefix ‖ DevEUI (MSB first) ‖ "JK-KDF1" / ${v.name} [${cite(v.source)}]`, () => {
        assert.equal(toHexUpper(vendorKdfInput(eui64FromBeHex(v.devEui), key)), toHexUpper(hex(expected.block)));
      });
      it(`${key} / key = AES-128-Encrypt(master, block) / ${v.name} [${cite(v.source)}]`, () => {
        const master = hex(v.master);
        const block = vendorKdfInput(v.devEui, key);
        const unchanged = watchInputs(master, block);
        assert.equal(toHexUpper(aes128EcbEncrypt(master, block)), expected.key);
        assert.equal(toHexUpper(nodeAesEcb(master, block)), expected.key);
        unchanged();
      });
    }
  }

  it('accepts any hex case and a 0x prefix for the DevEUI, like every EUI input', () => {
    assert.deepEqual(vendorKdfInput('0x70b3d57ed0000001', 'AppKey'), vendorKdfInput('70B3D57ED0000001', 'AppKey'));
  });

  it('refuses a DevEUI that is not 8 bytes', () => {
    assert.throws(() => vendorKdfInput('70B3D57ED00000', 'AppKey'), (e: unknown) => e instanceof ProtocolError && e.code === 'INVALID_LENGTH');
  });

  it('never equals a LoRaWAN 1.1 lifetime-key block (domain separation by the label)', () => {
    const devEui = eui64FromBeHex('70B3D57ED0000001');
    for (const k of ['JSEncKey', 'JSIntKey'] as const) {
      assert.notDeepEqual(vendorKdfInput(devEui, 'AppKey'), lifetimeKeyBlock(k, devEui));
      assert.notDeepEqual(vendorKdfInput(devEui, 'NwkKey'), lifetimeKeyBlock(k, devEui));
    }
  });
});
