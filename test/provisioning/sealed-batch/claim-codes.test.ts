import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { ProvisioningError } from '../../../src/provisioning/errors.js';
import { CLAIM_CODE_ALPHABET, CLAIM_CODE_BITS, claimCodeHash, generateClaimCode, normalizeClaimCode } from '../../../src/provisioning/sealed-batch/index.js';

describe('claim codes', () => {
  it('format / four groups of four Crockford base32 characters, no I, L, O or U', () => {
    for (let i = 0; i < 1000; i++) assert.match(generateClaimCode(), /^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$/);
    assert.equal(CLAIM_CODE_ALPHABET.length, 32);
    assert.doesNotMatch(CLAIM_CODE_ALPHABET, /[ILOU]/);
  });

  it('entropy / at least 80 bits: 16 symbols of 5 bits, each symbol uniform over the 32', () => {
    assert.ok(CLAIM_CODE_BITS >= 80);
    const n = 20_000;
    const counts = new Map<string, number>();
    const codes = new Set<string>();
    for (let i = 0; i < n; i++) {
      const code = normalizeClaimCode(generateClaimCode());
      assert.equal(code.length, 16);
      codes.add(code);
      for (const c of code) counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    assert.equal(codes.size, n, 'no repeats among 20,000 codes');
    // 320,000 symbols, 10,000 expected per character; chi-square with 31 degrees of freedom, p = 0.001 at 61.1.
    const expected = (n * 16) / 32;
    const chi2 = [...CLAIM_CODE_ALPHABET].reduce((s, c) => s + ((counts.get(c) ?? 0) - expected) ** 2 / expected, 0);
    assert.ok(chi2 < 61.1, `symbol distribution looks biased: chi-square ${chi2.toFixed(1)}`);
  });

  it('normalisation / upper case, dashes and spaces removed, O → 0 and I, L → 1 as Crockford decodes', () => {
    assert.equal(normalizeClaimCode(' abcd-efgh jkmn-pqrs '), 'ABCDEFGHJKMNPQRS');
    assert.equal(normalizeClaimCode('O1IL-oil0'), '01110110');
  });

  it('normalisation / refuses characters outside the alphabet, and an empty code', () => {
    for (const bad of ['ABCD-EFGU', 'ABCD_EFGH', '', ' - ']) {
      assert.throws(() => normalizeClaimCode(bad), (e: unknown) => e instanceof ProvisioningError && e.code === 'INVALID_INPUT', bad);
    }
  });

  it('hash / hex SHA-256 of UTF-8 "DEVEUI:NORMALIZEDCODE"', () => {
    const expected = createHash('sha256').update('70B3D57ED0000001:ABCDEFGHJKMNPQRS', 'utf8').digest('hex');
    assert.equal(claimCodeHash('70B3D57ED0000001', 'ABCD-EFGH-JKMN-PQRS'), expected);
    // how a buyer types it, and the DevEUI in any case: same hash
    assert.equal(claimCodeHash('70b3d57ed0000001', 'abcd efgh jkmn pqrs'), expected);
    assert.match(expected, /^[0-9a-f]{64}$/);
  });

  it('hash / known answer', () => {
    // sha256("0000000000000000:0000000000000000"), computed with coreutils sha256sum
    assert.equal(claimCodeHash('0000000000000000', '0000-0000-0000-0000'), 'c246fd28d2db42781f999a2a7af3fb2ba7760d30803dfe835be910e03991b035');
  });

  it('hash / a different DevEUI gives a different hash for the same code', () => {
    assert.notEqual(claimCodeHash('70B3D57ED0000001', 'ABCD-EFGH-JKMN-PQRS'), claimCodeHash('70B3D57ED0000002', 'ABCD-EFGH-JKMN-PQRS'));
  });
});
