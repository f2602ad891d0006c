import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { devAddrFromBeHex, eui64FromBeHex, netIdFromBeHex } from '../../src/protocol/index.js';
import { SimulatedDevice } from '../../sim/device.js';
import { buildAccept, lifetimeKey } from './helpers/reference-accept.js';
import { hex, vectors } from './helpers/vectors.js';

const A = vectors.A;
const B = vectors.B;
const netId = netIdFromBeHex('000013');
const devAddr = devAddrFromBeHex('26011A2B');
const devEuiB = eui64FromBeHex(B.devEui);
const joinEui = eui64FromBeHex(B.joinEui);

function device10(nonces: number[] = [A.devNonce]): SimulatedDevice {
  const queue = [...nonces];
  return new SimulatedDevice(
    { devEui: eui64FromBeHex(A.devEui), joinEui, macVersion: '1.0.3', roots: { appKey: hex(A.appKey) } },
    undefined,
    { randomDevNonce: () => queue.shift() ?? 0 },
  );
}

function device11(): SimulatedDevice {
  const d = new SimulatedDevice({ devEui: devEuiB, joinEui, macVersion: '1.1', roots: { appKey: hex(B.appKey), nwkKey: hex(B.nwkKey) } });
  return new SimulatedDevice(d.identity, { ...d.state, nextDevNonce: B.devNonce });
}

function accept11(over: Partial<Parameters<typeof buildAccept>[0]> = {}): Buffer {
  return buildAccept({
    joinNonce: 1, netId, devAddr, dlSettings: 0x83, rxDelay: 1,
    micFormula: '1.1', micKey: lifetimeKey(hex(B.nwkKey), 'JSIntKey', devEuiB), encryptionKey: hex(B.nwkKey),
    joinReqType: 0xff, joinEui, nonce: B.devNonce,
    ...over,
  });
}

describe('device simulator / drops a Join-accept as a device does', () => {
  it('no request pending / dropped', () => {
    assert.deepEqual(device10().receiveJoinAccept(hex(A.joinAccept)).accepted, false);
  });

  it('wrong length / dropped as invalid-length', () => {
    const d = device10();
    d.joinRequest();
    const r = d.receiveJoinAccept(hex(A.joinAccept).subarray(0, 16));
    assert.equal(r.accepted ? 'accepted' : r.reason, 'invalid-length');
  });

  it('1.0.3 / one ciphertext bit flipped / mic-mismatch, state unchanged', () => {
    const d = device10();
    d.joinRequest();
    const bad = hex(A.joinAccept);
    bad[5] = (bad[5] ?? 0) ^ 0x01;
    const before = d.state;
    const r = d.receiveJoinAccept(bad);
    assert.equal(r.accepted ? 'accepted' : r.reason, 'mic-mismatch');
    assert.deepEqual(d.state, before);
  });

  it('1.0.3 / accept encrypted with AES encrypt instead of decrypt / mic-mismatch', async () => {
    const { aes128EcbEncrypt } = await import('../../src/custody/primitives.js');
    const d = device10();
    d.joinRequest();
    const plain = Buffer.concat([hex(A.acceptPlaintext), hex(A.acceptMic)]);
    const wrong = Buffer.concat([plain.subarray(0, 1), aes128EcbEncrypt(hex(A.appKey), plain.subarray(1))]);
    const r = d.receiveJoinAccept(wrong);
    assert.equal(r.accepted ? 'accepted' : r.reason, 'mic-mismatch');
  });

  it('1.0.3 / the previous accept replayed after a new Join-request / join-nonce-repeated', () => {
    const d = device10([A.devNonce, 0x4321]);
    d.joinRequest();
    assert.ok(d.receiveJoinAccept(hex(A.joinAccept)).accepted);
    d.joinRequest();
    // The legacy MIC does not cover DevNonce, so only the JoinNonce rule stops the replay.
    const r = d.receiveJoinAccept(hex(A.joinAccept));
    assert.equal(r.accepted ? 'accepted' : r.reason, 'join-nonce-repeated');
  });

  it('1.0.3 / a lower JoinNonce that differs from the last / accepted (1.0.x only refuses equality)', () => {
    const d = device10([1, 2]);
    const appKey = hex(A.appKey);
    d.joinRequest();
    assert.ok(d.receiveJoinAccept(buildAccept({ joinNonce: 7, netId, devAddr, dlSettings: 3, rxDelay: 1, micFormula: 'legacy', micKey: appKey, encryptionKey: appKey })).accepted);
    d.joinRequest();
    const r = d.receiveJoinAccept(buildAccept({ joinNonce: 3, netId, devAddr, dlSettings: 3, rxDelay: 1, micFormula: 'legacy', micKey: appKey, encryptionKey: appKey }));
    assert.ok(r.accepted);
  });

  describe('1.1', () => {
    it('OptNeg=1 but legacy MIC formula / mic-mismatch', () => {
      const d = device11();
      d.joinRequest();
      const r = d.receiveJoinAccept(accept11({ micFormula: 'legacy', micKey: hex(B.nwkKey) }));
      assert.equal(r.accepted ? 'accepted' : r.reason, 'mic-mismatch');
    });
    it('OptNeg=0 but 1.1 MIC formula / mic-mismatch', () => {
      const d = device11();
      d.joinRequest();
      const r = d.receiveJoinAccept(accept11({ dlSettings: 0x03 }));
      assert.equal(r.accepted ? 'accepted' : r.reason, 'mic-mismatch');
    });
    it('OptNeg=1, MIC over the wrong DevNonce / mic-mismatch', () => {
      const d = device11();
      d.joinRequest();
      const r = d.receiveJoinAccept(accept11({ nonce: B.devNonce + 1 }));
      assert.equal(r.accepted ? 'accepted' : r.reason, 'mic-mismatch');
    });
    it('answer to a Join-request encrypted with JSEncKey / mic-mismatch', () => {
      const d = device11();
      d.joinRequest();
      const r = d.receiveJoinAccept(accept11({ encryptionKey: lifetimeKey(hex(B.nwkKey), 'JSEncKey', devEuiB) }));
      assert.equal(r.accepted ? 'accepted' : r.reason, 'mic-mismatch');
    });
    it('OptNeg=1, JoinNonce equal to the last accepted / join-nonce-not-greater, state unchanged', () => {
      const d = device11();
      d.joinRequest();
      assert.ok(d.receiveJoinAccept(accept11()).accepted);
      d.joinRequest();
      const before = d.state;
      const r = d.receiveJoinAccept(accept11({ nonce: B.devNonce + 1 }));
      assert.equal(r.accepted ? 'accepted' : r.reason, 'join-nonce-not-greater');
      assert.deepEqual(d.state, before);
    });
    it('OptNeg=1, JoinNonce below the last accepted / join-nonce-not-greater', () => {
      const d = device11();
      d.joinRequest();
      assert.ok(d.receiveJoinAccept(accept11({ joinNonce: 9 })).accepted);
      d.joinRequest();
      const r = d.receiveJoinAccept(accept11({ joinNonce: 8, nonce: B.devNonce + 1 }));
      assert.equal(r.accepted ? 'accepted' : r.reason, 'join-nonce-not-greater');
    });
    it('rejoin type 1 answered with OptNeg=0 / rejoin-answer-without-opt-neg', () => {
      const d = device11();
      d.joinRequest();
      assert.ok(d.receiveJoinAccept(accept11()).accepted);
      d.rejoinRequest(1);
      const r = d.receiveJoinAccept(accept11({ joinNonce: 2, dlSettings: 0x03, encryptionKey: lifetimeKey(hex(B.nwkKey), 'JSEncKey', devEuiB) }));
      assert.equal(r.accepted ? 'accepted' : r.reason, 'rejoin-answer-without-opt-neg');
    });
    it('rejoin type 0 answer / encrypted with NwkKey instead of JSEncKey / mic-mismatch', () => {
      const d = device11();
      d.joinRequest();
      assert.ok(d.receiveJoinAccept(accept11()).accepted);
      d.rejoinRequest(0);
      const r = d.receiveJoinAccept(accept11({ joinNonce: 2, joinReqType: 0x00, nonce: 0 }));
      assert.equal(r.accepted ? 'accepted' : r.reason, 'mic-mismatch');
    });
    it('rejoin type 0 answer / correct / accepted, RJcount0 reset to 0, RJcount1 kept', () => {
      const d = device11();
      d.joinRequest();
      assert.ok(d.receiveJoinAccept(accept11()).accepted);
      d.rejoinRequest(1);
      d.rejoinRequest(0);
      assert.equal(d.state.nextRjCount0, 1);
      const r = d.receiveJoinAccept(accept11({ joinNonce: 2, joinReqType: 0x00, nonce: 0, encryptionKey: lifetimeKey(hex(B.nwkKey), 'JSEncKey', devEuiB) }));
      assert.ok(r.accepted, JSON.stringify(r));
      assert.equal(d.state.nextRjCount0, 0);
      assert.equal(d.state.nextRjCount1, 1);
    });
  });

  describe('device refuses to send', () => {
    it('1.0.3 device / rejoin / REJOIN_NEEDS_LORAWAN_11', () => {
      assert.throws(() => device10().rejoinRequest(1), { code: 'REJOIN_NEEDS_LORAWAN_11' });
    });
    it('1.1 device without a session / rejoin type 2 / REJOIN_NEEDS_SESSION', () => {
      assert.throws(() => device11().rejoinRequest(2), { code: 'REJOIN_NEEDS_SESSION' });
    });
    it('1.1 device without NwkKey / construction fails with MISSING_NWK_KEY', () => {
      assert.throws(() => new SimulatedDevice({ devEui: devEuiB, joinEui, macVersion: '1.1', roots: { appKey: hex(B.appKey) } }), { code: 'MISSING_NWK_KEY' });
    });
  });
});
