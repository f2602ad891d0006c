import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { aes128EcbEncrypt } from '../../src/custody/primitives.js';
import {
  LEGACY_SESSION_KEY_PREFIX,
  LIFETIME_KEY_PREFIX,
  LORAWAN11_SESSION_KEY_PREFIX,
  type LegacySessionKey,
  type LifetimeKey,
  type LoRaWAN11SessionKey,
  ProtocolError,
  eui64FromBeHex,
  legacySessionKeyBlock,
  lifetimeKeyBlock,
  lorawan11SessionKeyBlock,
  netIdFromBeHex,
} from '../../src/protocol/index.js';
import { type VectorSource, cite, hex, loadVectors, toHexUpper, watchInputs } from '../helpers/vectors.js';

interface DerivationVector {
  name: string; source: VectorSource[]; formula: 'legacy' | 'lorawan11' | 'lifetime'; rootKey: string; rootKeyRole: string;
  inputs: { joinNonce?: number; netId?: string; joinEui?: string; devEui?: string; devNonce?: number; devNonceSlot?: string };
  expected: Record<string, string>;
}
interface DivergentVector {
  name: string; source: VectorSource[]; explanation: string; rootKey: string;
  inputs: { joinNonce: number; netId: string; joinEui: string; devNonce: number };
  brocaarFNwkSIntKey: string;
}
const file = loadVectors<{ vectors: DerivationVector[]; divergent: DivergentVector[] }>('key-derivation');

function block(v: DerivationVector, key: string): Buffer {
  const i = v.inputs;
  switch (v.formula) {
    case 'legacy':
      return legacySessionKeyBlock(key as LegacySessionKey, { joinNonce: i.joinNonce ?? -1, netId: netIdFromBeHex(i.netId), devNonce: i.devNonce ?? -1 });
    case 'lorawan11':
      return lorawan11SessionKeyBlock(key as LoRaWAN11SessionKey, { joinNonce: i.joinNonce ?? -1, joinEui: eui64FromBeHex(i.joinEui), devNonce: i.devNonce ?? -1 });
    case 'lifetime':
      return lifetimeKeyBlock(key as LifetimeKey, eui64FromBeHex(i.devEui));
  }
}

const title = { legacy: 'LoRaWAN 1.0.x (and 1.1 with OptNeg=0)', lorawan11: 'LoRaWAN 1.1 OptNeg=1', lifetime: 'LoRaWAN 1.1 lifetime key' } as const;

describe('Key derivation known answers', () => {
  for (const v of file.vectors) {
    for (const [key, expected] of Object.entries(v.expected)) {
      const slot = v.inputs.devNonceSlot && v.inputs.devNonceSlot !== 'DevNonce' ? ` / ${v.inputs.devNonceSlot} in the DevNonce slot` : '';
      it(`${title[v.formula]} / ${key} = aes128_encrypt(${v.rootKeyRole.split(' ')[0]}, block)${slot} / ${v.name} [${cite(v.source)}]`, () => {
        const root = hex(v.rootKey);
        const b = block(v, key);
        const unchanged = watchInputs(root, b);
        assert.equal(b.length, 16);
        assert.equal(toHexUpper(aes128EcbEncrypt(root, b)), expected);
        unchanged();
      });
    }
  }
});

describe('Key derivation block layouts', () => {
  it('LoRaWAN 1.0.x / prefix | JoinNonce(3 LE) | NetID(3 LE) | DevNonce(2 LE) | 7 zero bytes', () => {
    const b = legacySessionKeyBlock('NwkSKey', { joinNonce: 0xabcdef, netId: netIdFromBeHex('010203'), devNonce: 0x1234 });
    assert.equal(toHexUpper(b), '01' + 'EFCDAB' + '030201' + '3412' + '00000000000000');
    assert.equal(legacySessionKeyBlock('AppSKey', { joinNonce: 0, netId: netIdFromBeHex('000000'), devNonce: 0 })[0], 0x02);
  });
  it('LoRaWAN 1.1 / prefix | JoinNonce(3 LE) | JoinEUI(8 LE) | DevNonce(2 LE) | 2 zero bytes', () => {
    const b = lorawan11SessionKeyBlock('SNwkSIntKey', { joinNonce: 0xabcdef, joinEui: eui64FromBeHex('0102030405060708'), devNonce: 0x1234 });
    assert.equal(toHexUpper(b), '03' + 'EFCDAB' + '0807060504030201' + '3412' + '0000');
  });
  it('LoRaWAN 1.1 / lifetime keys: prefix | DevEUI(8 LE) | 7 zero bytes', () => {
    assert.equal(toHexUpper(lifetimeKeyBlock('JSIntKey', eui64FromBeHex('0102030405060708'))), '06' + '0807060504030201' + '00000000000000');
    assert.equal(lifetimeKeyBlock('JSEncKey', eui64FromBeHex('0102030405060708'))[0], 0x05);
  });
  it('prefixes are the ones of LoRaWAN 1.0.3 §6.2.5 and 1.1 §6.2.3.2 / §6.1.1.3', () => {
    assert.deepEqual({ ...LEGACY_SESSION_KEY_PREFIX }, { NwkSKey: 1, AppSKey: 2 });
    assert.deepEqual({ ...LORAWAN11_SESSION_KEY_PREFIX }, { FNwkSIntKey: 1, AppSKey: 2, SNwkSIntKey: 3, NwkSEncKey: 4 });
    assert.deepEqual({ ...LIFETIME_KEY_PREFIX }, { JSEncKey: 5, JSIntKey: 6 });
  });
  it('out-of-range JoinNonce or DevNonce / ProtocolError OUT_OF_RANGE naming the field', () => {
    const netId = netIdFromBeHex('000013');
    const joinEui = eui64FromBeHex('70B3D57ED0000001');
    const cases: [() => unknown, string][] = [
      [() => legacySessionKeyBlock('NwkSKey', { joinNonce: 0x1000000, netId, devNonce: 0 }), 'JoinNonce'],
      [() => legacySessionKeyBlock('NwkSKey', { joinNonce: -1, netId, devNonce: 0 }), 'JoinNonce'],
      [() => legacySessionKeyBlock('AppSKey', { joinNonce: 1, netId, devNonce: 0x10000 }), 'DevNonce'],
      [() => lorawan11SessionKeyBlock('AppSKey', { joinNonce: 1.5, joinEui, devNonce: 0 }), 'JoinNonce'],
      [() => lorawan11SessionKeyBlock('AppSKey', { joinNonce: 1, joinEui, devNonce: -1 }), 'DevNonce'],
    ];
    for (const [fn, field] of cases) {
      assert.throws(fn, (e: unknown) => e instanceof ProtocolError && e.code === 'OUT_OF_RANGE' && e.field === field);
    }
  });
});

describe('Interop / implementations that diverge from the spec', () => {
  for (const d of file.divergent) {
    it(`${d.name} [${cite(d.source)}]`, () => {
      const root = hex(d.rootKey);
      const legacy = aes128EcbEncrypt(root, legacySessionKeyBlock('NwkSKey', { joinNonce: d.inputs.joinNonce, netId: netIdFromBeHex(d.inputs.netId), devNonce: d.inputs.devNonce }));
      const spec11 = aes128EcbEncrypt(root, lorawan11SessionKeyBlock('FNwkSIntKey', { joinNonce: d.inputs.joinNonce, joinEui: eui64FromBeHex(d.inputs.joinEui), devNonce: d.inputs.devNonce }));
      // What brocaar's JS emits is the 1.0 formula...
      assert.equal(toHexUpper(legacy), d.brocaarFNwkSIntKey);
      // ...which is not the LoRaWAN 1.1 §6.2.3.2 key a device that sent a Rejoin-request derives.
      assert.notEqual(toHexUpper(spec11), d.brocaarFNwkSIntKey);
    });
  }
});
