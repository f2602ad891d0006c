import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type DevNonceState,
  MAX_JOIN_NONCE,
  ProtocolError,
  checkDevNonceCounter,
  checkDevNonceRandom,
  checkRjCount1,
  isLoRaWAN11,
  nextJoinNonce,
  usesDevNonceCounter,
} from '../../src/protocol/index.js';

const fresh: DevNonceState = Object.freeze({ lastDevNonce: null, usedDevNonces: Object.freeze([]) as readonly number[] });

describe('Nonces / DevNonce counter (LoRaWAN 1.0.4 §6.2.5, 1.1)', () => {
  it('first Join-request with DevNonce 0 / accepted (no DevNonce seen yet is null, not 0)', () => {
    const r = checkDevNonceCounter(fresh, 0);
    assert.equal(r.ok, true);
    assert.deepEqual(r.ok && r.next, { lastDevNonce: 0, usedDevNonces: [] });
  });
  it('first Join-request with any value / accepted', () => {
    assert.equal(checkDevNonceCounter(fresh, 65535).ok, true);
  });
  it('same DevNonce again / refused as not increasing, state untouched', () => {
    const s: DevNonceState = Object.freeze({ lastDevNonce: 7, usedDevNonces: Object.freeze([]) as readonly number[] });
    assert.deepEqual(checkDevNonceCounter(s, 7), { ok: false, reason: 'dev-nonce-not-increasing' });
    assert.deepEqual(checkDevNonceCounter(s, 6), { ok: false, reason: 'dev-nonce-not-increasing' });
    assert.deepEqual(s, { lastDevNonce: 7, usedDevNonces: [] });
  });
  it('greater DevNonce (gaps allowed) / accepted, last becomes the new value', () => {
    const r = checkDevNonceCounter({ lastDevNonce: 7, usedDevNonces: [] }, 100);
    assert.equal(r.ok && r.next.lastDevNonce, 100);
  });
  it('after 65535 nothing is accepted (a DevNonce must never be reused for a JoinEUI)', () => {
    assert.equal(checkDevNonceCounter({ lastDevNonce: 65535, usedDevNonces: [] }, 0).ok, false);
  });
  it('property / never accepts a value ≤ last, always accepts a value > last', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }), (last, dn) => {
      const r = checkDevNonceCounter({ lastDevNonce: last, usedDevNonces: [] }, dn);
      assert.equal(r.ok, dn > last);
      if (r.ok) assert.equal(r.next.lastDevNonce, dn);
    }), { numRuns: 2000 });
  });
  it('property / along any sequence, the accepted values are strictly increasing', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 65535 }), { maxLength: 60 }), (seq) => {
      let s: DevNonceState = fresh;
      const accepted: number[] = [];
      for (const dn of seq) {
        const r = checkDevNonceCounter(s, dn);
        if (r.ok) {
          accepted.push(dn);
          s = r.next;
        }
      }
      for (let i = 1; i < accepted.length; i++) assert.ok((accepted[i] ?? 0) > (accepted[i - 1] ?? 0));
    }));
  });
});

describe('Nonces / random DevNonce (LoRaWAN 1.0.0–1.0.3 §6.2.4)', () => {
  it('unused value / accepted and remembered; the input state is not mutated', () => {
    const r = checkDevNonceRandom(fresh, 0x1234, 10);
    assert.equal(r.ok, true);
    assert.deepEqual(r.ok && r.next.usedDevNonces, [0x1234]);
    assert.deepEqual(fresh.usedDevNonces, []);
  });
  it('reused value / refused as reused', () => {
    const s: DevNonceState = { lastDevNonce: 5, usedDevNonces: [3, 9, 5] };
    assert.deepEqual(checkDevNonceRandom(s, 9, 10), { ok: false, reason: 'dev-nonce-reused' });
  });
  it('a smaller value than the last is fine (random, not a counter)', () => {
    assert.equal(checkDevNonceRandom({ lastDevNonce: 500, usedDevNonces: [500] }, 3, 10).ok, true);
  });
  it('history is bounded by the limit, oldest dropped first; a dropped value becomes acceptable again', () => {
    let s: DevNonceState = fresh;
    for (const dn of [1, 2, 3, 4]) {
      const r = checkDevNonceRandom(s, dn, 3);
      assert.ok(r.ok);
      s = r.next;
    }
    assert.deepEqual(s.usedDevNonces, [2, 3, 4]);
    assert.equal(checkDevNonceRandom(s, 1, 3).ok, true);
    assert.equal(checkDevNonceRandom(s, 2, 3).ok, false);
  });
  it('property / history never exceeds the limit and always ends with the last accepted value', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 80 }), fc.integer({ min: 1, max: 20 }), (seq, limit) => {
      let s: DevNonceState = fresh;
      for (const dn of seq) {
        const r = checkDevNonceRandom(s, dn, limit);
        if (r.ok) {
          assert.ok(r.next.usedDevNonces.length <= limit);
          assert.equal(r.next.usedDevNonces.at(-1), dn);
          s = r.next;
        } else {
          assert.ok(s.usedDevNonces.includes(dn));
        }
      }
    }));
  });
});

describe('Nonces / JoinNonce', () => {
  it('first JoinNonce is 1 (TTS, simple-join-server; never 0)', () => {
    assert.equal(nextJoinNonce(0), 1);
  });
  it('increments by one', () => {
    assert.equal(nextJoinNonce(41), 42);
  });
  it('2^24-1 is the last value issued; after it / JOIN_NONCE_EXHAUSTED (no wrap)', () => {
    assert.equal(MAX_JOIN_NONCE, 0xffffff);
    assert.equal(nextJoinNonce(0xfffffe), 0xffffff);
    assert.throws(() => nextJoinNonce(0xffffff), (e: unknown) => e instanceof ProtocolError && e.code === 'JOIN_NONCE_EXHAUSTED');
    assert.throws(() => nextJoinNonce(0x1000000), (e: unknown) => e instanceof ProtocolError && e.code === 'JOIN_NONCE_EXHAUSTED');
  });
});

describe('Nonces / RJcount1 (LoRaWAN 1.1 §6.2.4.2)', () => {
  it('first type-1 rejoin (none seen) / accepted, 0 included', () => {
    assert.equal(checkRjCount1(null, 0), true);
  });
  it('equal or smaller RJcount1 / refused; greater / accepted', () => {
    assert.equal(checkRjCount1(5, 5), false);
    assert.equal(checkRjCount1(5, 4), false);
    assert.equal(checkRjCount1(5, 6), true);
  });
  it('property / accepts exactly the values greater than last', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }), (last, v) => checkRjCount1(last, v) === v > last));
  });
});

describe('Nonces / which DevNonce rule applies per MAC version', () => {
  it('counter rule for 1.0.4 and 1.1; random-set rule for 1.0.0–1.0.3', () => {
    assert.equal(usesDevNonceCounter('1.0.4'), true);
    assert.equal(usesDevNonceCounter('1.1'), true);
    for (const v of ['1.0.0', '1.0.1', '1.0.2', '1.0.3'] as const) assert.equal(usesDevNonceCounter(v), false);
    assert.equal(isLoRaWAN11('1.1'), true);
    assert.equal(isLoRaWAN11('1.0.4'), false);
  });
});
