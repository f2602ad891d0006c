import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac, aesKeyUnwrap, aesKeyWrap, micEquals } from '../../src/custody/primitives.js';
import { type VectorSource, cite, hex, loadVectors, toHexUpper, watchInputs } from '../helpers/vectors.js';

interface CmacFile {
  subkeys: { key: string; aes128OfZero: string; k1: string; k2: string };
  vectors: { name: string; source: VectorSource[]; key: string; message: string; tag: string }[];
}
interface WrapFile { vectors: { name: string; source: VectorSource[]; kek: string; keyData: string; ciphertext: string }[] }

const cmac = loadVectors<CmacFile>('cmac-rfc4493');
const wrap = loadVectors<WrapFile>('keywrap-rfc3394');

describe('custody primitives / AES-CMAC (RFC 4493)', () => {
  for (const v of cmac.vectors) {
    it(`AES-CMAC / ${v.name} [${cite(v.source)}]`, () => {
      const key = hex(v.key);
      const msg = hex(v.message);
      const unchanged = watchInputs(key, msg);
      assert.equal(toHexUpper(aesCmac(key, msg)), v.tag);
      unchanged();
    });
  }
  it('AES-CMAC / subkey L = AES-128(K, 0^128) of RFC 4493 §4', () => {
    assert.equal(toHexUpper(aes128EcbEncrypt(hex(cmac.subkeys.key), Buffer.alloc(16))), cmac.subkeys.aes128OfZero);
  });
  it('AES-CMAC / accepts a Uint8Array view into a larger buffer (no aliasing of the underlying bytes)', () => {
    const v = cmac.vectors[2];
    assert.ok(v);
    const big = Buffer.concat([Buffer.from('FFFF', 'hex'), hex(v.message), Buffer.from('EEEE', 'hex')]);
    const view = new Uint8Array(big.buffer, big.byteOffset + 2, hex(v.message).length);
    assert.equal(toHexUpper(aesCmac(hex(v.key), view)), v.tag);
  });
  it('AES-CMAC / every message length 0..80 matches a streaming reference built from the RFC algorithm', () => {
    // Reference: RFC 4493 §2.4 written out block by block with AES-ECB only.
    const key = hex(cmac.subkeys.key);
    const k1 = hex(cmac.subkeys.k1);
    const k2 = hex(cmac.subkeys.k2);
    const ref = (m: Buffer): string => {
      const n = Math.max(1, Math.ceil(m.length / 16));
      const complete = m.length > 0 && m.length % 16 === 0;
      let x: Buffer = Buffer.alloc(16);
      for (let i = 0; i < n; i++) {
        let blk: Buffer = Buffer.alloc(16);
        m.subarray(i * 16, i * 16 + 16).copy(blk);
        if (i === n - 1) {
          if (!complete) blk[m.length - i * 16] = 0x80;
          const sub = complete ? k1 : k2;
          blk = Buffer.from(blk.map((b, j) => b ^ (sub[j] ?? 0)));
        }
        x = aes128EcbEncrypt(key, Buffer.from(x.map((b, j) => b ^ (blk[j] ?? 0))));
      }
      return toHexUpper(x);
    };
    const m = randomBytes(80);
    for (let len = 0; len <= 80; len++) assert.equal(toHexUpper(aesCmac(key, m.subarray(0, len))), ref(m.subarray(0, len)), `length ${len}`);
  });
});

describe('custody primitives / AES key wrap (RFC 3394)', () => {
  for (const v of wrap.vectors) {
    it(`key wrap / ${v.name} [${cite(v.source)}]`, () => {
      const kek = hex(v.kek);
      const key = hex(v.keyData);
      const unchanged = watchInputs(kek, key);
      assert.equal(toHexUpper(aesKeyWrap(kek, key)), v.ciphertext);
      unchanged();
    });
    it(`key unwrap / ${v.name}`, () => {
      const kek = hex(v.kek);
      const wrapped = hex(v.ciphertext);
      const unchanged = watchInputs(kek, wrapped);
      assert.equal(toHexUpper(aesKeyUnwrap(kek, wrapped)), toHexUpper(hex(v.keyData)));
      unchanged();
    });
  }
  it('key unwrap / wrong KEK fails the RFC 3394 §2.2.3 integrity check', () => {
    const v = wrap.vectors[0];
    assert.ok(v);
    const wrongKek = Buffer.from(hex(v.kek));
    wrongKek[0] = (wrongKek[0] ?? 0) ^ 1;
    assert.throws(() => aesKeyUnwrap(wrongKek, hex(v.ciphertext)));
  });
  it('key unwrap / one flipped ciphertext bit fails the integrity check', () => {
    const v = wrap.vectors[0];
    assert.ok(v);
    const c = Buffer.from(hex(v.ciphertext));
    c[10] = (c[10] ?? 0) ^ 0x01;
    assert.throws(() => aesKeyUnwrap(hex(v.kek), c));
  });
  it('key wrap / a KEK that is not 16, 24 or 32 bytes is refused', () => {
    assert.throws(() => aesKeyWrap(Buffer.alloc(8), Buffer.alloc(16)), RangeError);
    assert.throws(() => aesKeyUnwrap(Buffer.alloc(17), Buffer.alloc(24)), RangeError);
  });
  it('key wrap / key data that is not a multiple of 64 bits, or under 128 bits, is refused', () => {
    const kek = Buffer.alloc(16, 1);
    assert.throws(() => aesKeyWrap(kek, Buffer.alloc(7)));
    assert.throws(() => aesKeyWrap(kek, Buffer.alloc(12)));
  });
  it('key wrap / round trip for random 128-bit keys under random 128/192/256-bit KEKs', () => {
    fc.assert(fc.property(fc.constantFrom(16, 24, 32), fc.uint8Array({ minLength: 16, maxLength: 16 }), (kekLen, key) => {
      const kek = randomBytes(kekLen);
      const w = aesKeyWrap(kek, key);
      assert.equal(w.length, 24);
      assert.ok(aesKeyUnwrap(kek, w).equals(Buffer.from(key)));
    }), { numRuns: 50 });
  });
});

describe('custody primitives / AES-128-ECB and MIC comparison', () => {
  it('AES-128-ECB / FIPS-197 Appendix C.1 example vector', () => {
    const key = hex('000102030405060708090a0b0c0d0e0f');
    const pt = hex('00112233445566778899aabbccddeeff');
    assert.equal(toHexUpper(aes128EcbEncrypt(key, pt)), '69C4E0D86A7B0430D8CDB78070B4C55A');
    assert.equal(toHexUpper(aes128EcbDecrypt(key, hex('69C4E0D86A7B0430D8CDB78070B4C55A'))), toHexUpper(pt));
  });
  it('AES-128-ECB / no padding: a partial block is refused rather than padded', () => {
    assert.throws(() => aes128EcbEncrypt(Buffer.alloc(16), Buffer.alloc(15)));
    assert.equal(aes128EcbEncrypt(Buffer.alloc(16), Buffer.alloc(32)).length, 32);
  });
  it('micEquals / first four CMAC bytes against the received MIC', () => {
    const full = hex('E6E10C55AABBCCDDEEFF00112233445566');
    assert.equal(micEquals(full, hex('E6E10C55')), true);
    assert.equal(micEquals(full, hex('E6E10C56')), false);
    assert.equal(micEquals(full, hex('E6E10C')), false, 'a 3-byte MIC is not a MIC');
    assert.equal(micEquals(full, hex('E6E10C5500')), false, 'a 5-byte MIC is not a MIC');
  });
});

// A KeyObject keeps its ECB contexts and CMAC subkeys across calls (primitives.ts): the answers must not depend on
// what the key did before, nor on whether the key is a KeyObject or raw bytes.
describe('custody primitives / KeyObject keys reuse their cipher contexts', () => {
  it('AES-CMAC / RFC 4493 vectors with a KeyObject, each computed twice', () => {
    for (const v of cmac.vectors) {
      const key = createSecretKey(hex(v.key));
      assert.equal(toHexUpper(aesCmac(key, hex(v.message))), v.tag, v.name);
      assert.equal(toHexUpper(aesCmac(key, hex(v.message))), v.tag, `${v.name}, again`);
    }
  });
  it('AES-128-ECB / FIPS-197 C.1 with a KeyObject, encrypt and decrypt interleaved', () => {
    const key = createSecretKey(hex('000102030405060708090a0b0c0d0e0f'));
    for (let i = 0; i < 3; i++) {
      assert.equal(toHexUpper(aes128EcbEncrypt(key, hex('00112233445566778899aabbccddeeff'))), '69C4E0D86A7B0430D8CDB78070B4C55A');
      assert.equal(toHexUpper(aes128EcbDecrypt(key, hex('69C4E0D86A7B0430D8CDB78070B4C55A'))), '00112233445566778899AABBCCDDEEFF');
    }
  });
  it('AES-128-ECB / a partial block is refused with a KeyObject too, and the key still works afterwards', () => {
    const key = createSecretKey(hex('000102030405060708090a0b0c0d0e0f'));
    assert.throws(() => aes128EcbEncrypt(key, Buffer.alloc(15)), RangeError);
    assert.throws(() => aes128EcbDecrypt(key, Buffer.alloc(17)), RangeError);
    assert.equal(toHexUpper(aes128EcbEncrypt(key, hex('00112233445566778899aabbccddeeff'))), '69C4E0D86A7B0430D8CDB78070B4C55A');
  });
  it('any sequence of ECB encrypt, ECB decrypt and CMAC on one KeyObject equals the same calls with raw key bytes', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('encrypt' as const), data: fc.integer({ min: 1, max: 3 }).chain((n) => fc.uint8Array({ minLength: 16 * n, maxLength: 16 * n })) }),
      fc.record({ kind: fc.constant('decrypt' as const), data: fc.integer({ min: 1, max: 3 }).chain((n) => fc.uint8Array({ minLength: 16 * n, maxLength: 16 * n })) }),
      fc.record({ kind: fc.constant('cmac' as const), data: fc.uint8Array({ maxLength: 70 }) }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.array(op, { minLength: 1, maxLength: 12 }), (raw, ops) => {
        const keyObject = createSecretKey(raw);
        for (const o of ops) {
          const f = o.kind === 'encrypt' ? aes128EcbEncrypt : o.kind === 'decrypt' ? aes128EcbDecrypt : aesCmac;
          assert.equal(toHexUpper(f(keyObject, o.data)), toHexUpper(f(raw, o.data)), o.kind);
        }
      }),
      { numRuns: 300 },
    );
  });
});

