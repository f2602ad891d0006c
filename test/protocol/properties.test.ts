import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type Eui64,
  type NetId,
  decodeJoinAcceptPlaintext,
  decodeJoinRequest,
  decodeRejoinRequest,
  devAddrFromBeHex,
  encodeJoinAcceptBody,
  encodeJoinRequestMicInput,
  encodeRejoinRequestMicInput,
  eui64FromBeHex,
  netIdFromBeHex,
  parseHex,
  toHex,
} from '../../src/protocol/index.js';
import { watchInputs } from '../helpers/vectors.js';

const bytesHex = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b).toString('hex').toUpperCase());
const euiArb = bytesHex(8).map((h) => eui64FromBeHex(h));
const netIdArb = bytesHex(3).map((h) => netIdFromBeHex(h));
const devAddrArb = bytesHex(4).map((h) => devAddrFromBeHex(h));
const micArb = fc.uint8Array({ minLength: 4, maxLength: 4 });
const u16 = fc.integer({ min: 0, max: 0xffff });

describe('Properties / codecs round trip', () => {
  it('Join-request / encode then decode is the identity on (JoinEUI, DevEUI, DevNonce, MIC)', () => {
    fc.assert(fc.property(euiArb, euiArb, u16, micArb, (joinEui, devEui, devNonce, mic) => {
      const phy = Buffer.concat([encodeJoinRequestMicInput({ joinEui, devEui, devNonce }), mic]);
      const unchanged = watchInputs(phy);
      const d = decodeJoinRequest(phy);
      assert.deepEqual([d.joinEui, d.devEui, d.devNonce, [...d.mic]], [joinEui, devEui, devNonce, [...mic]]);
      assert.ok(d.micInput.equals(phy.subarray(0, 19)));
      unchanged();
    }), { numRuns: 300 });
  });
  it('Rejoin-request types 0/1/2 / encode then decode is the identity', () => {
    const f02 = fc.record({ rejoinType: fc.constantFrom(0 as const, 2 as const), netId: netIdArb, devEui: euiArb, rjCount0: u16 });
    const f1 = fc.record({ rejoinType: fc.constant(1 as const), joinEui: euiArb, devEui: euiArb, rjCount1: u16 });
    fc.assert(fc.property(fc.oneof(f02, f1), micArb, (fields, mic) => {
      const phy = Buffer.concat([encodeRejoinRequestMicInput(fields), mic]);
      const d = decodeRejoinRequest(phy);
      if (fields.rejoinType === 1) {
        assert.ok(d.rejoinType === 1);
        assert.deepEqual([d.joinEui, d.devEui, d.rjCount1], [fields.joinEui, fields.devEui, fields.rjCount1]);
        assert.equal(phy.length, 24);
      } else {
        assert.ok(d.rejoinType !== 1);
        assert.deepEqual([d.rejoinType, d.netId, d.devEui, d.rjCount0], [fields.rejoinType, fields.netId, fields.devEui, fields.rjCount0]);
        assert.equal(phy.length, 19);
      }
      assert.ok(d.mic.equals(Buffer.from(mic)));
    }), { numRuns: 300 });
  });
  it('Join-accept plaintext / encode body | MIC then decode is the identity, with and without CFList', () => {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 0xffffff }), netIdArb, devAddrArb, fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 15 }),
      fc.option(fc.uint8Array({ minLength: 16, maxLength: 16 }), { nil: undefined }), micArb,
      (joinNonce, netId: NetId, devAddr, dlSettings, rxDelay, cfList, mic) => {
        const body = encodeJoinAcceptBody({ joinNonce, netId, devAddr, dlSettings, rxDelay, cfList });
        const d = decodeJoinAcceptPlaintext(Buffer.concat([body, mic]));
        assert.deepEqual(
          [d.joinNonce, d.netId, d.devAddr, d.dlSettings, d.rxDelay, d.cfList && [...d.cfList], [...d.mic]],
          [joinNonce, netId, devAddr, dlSettings, rxDelay, cfList && [...cfList], [...mic]],
        );
        assert.ok(d.body.equals(body));
      }), { numRuns: 300 });
  });
  it('EUI-64 / LE bytes written by the encoder are the reverse of the canonical BE text', () => {
    fc.assert(fc.property(euiArb, euiArb, (joinEui: Eui64, devEui: Eui64) => {
      const mi = encodeJoinRequestMicInput({ joinEui, devEui, devNonce: 0 });
      assert.equal(toHex(Buffer.from(mi.subarray(1, 9)).reverse()), joinEui);
      assert.equal(toHex(Buffer.from(mi.subarray(9, 17)).reverse()), devEui);
    }));
  });
});

describe('Properties / TS002 hex', () => {
  const randomCase = (s: string, flips: boolean[]): string => [...s].map((c, i) => (flips[i % flips.length] ? c.toUpperCase() : c.toLowerCase())).join('');
  it('parseHex accepts any letter case, with or without 0x/0X, and round trips through toHex', () => {
    fc.assert(fc.property(
      fc.uint8Array({ maxLength: 40 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), fc.constantFrom('', '0x', '0X'),
      (bytes, flips, prefix) => {
        const canonical = Buffer.from(bytes).toString('hex').toUpperCase();
        const text = prefix + randomCase(canonical, flips);
        assert.equal(toHex(parseHex(text, 'F')), canonical);
        assert.equal(toHex(parseHex(toHex(parseHex(text, 'F')), 'F')), canonical);
      }), { numRuns: 500 });
  });
  it('EUI parsing is case- and prefix-insensitive: all spellings give one canonical Eui64', () => {
    fc.assert(fc.property(bytesHex(8), fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), fc.constantFrom('', '0x', '0X'), (h, flips, prefix) => {
      assert.equal(eui64FromBeHex(prefix + randomCase(h, flips)), h);
    }));
  });
  it('strings with a non-hex character are refused', () => {
    fc.assert(fc.property(fc.string({ minLength: 1, maxLength: 20 }).filter((s) => /[^0-9a-fA-F]/.test(s.replace(/^0[xX]/, ''))), (s) => {
      assert.throws(() => parseHex(s, 'F'));
    }));
  });
});
