import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type MacVersion, eui64FromBeHex } from '../../src/protocol/index.js';
import { SimulatedDevice } from '../../sim/device.js';
import { jsEncKey, jsIntKey, sessionKeysToHex } from '../../sim/device-keys.js';
import { hex, vectors } from './helpers/vectors.js';

const A = vectors.A;
const B = vectors.B;
const C = vectors.C;
const D = vectors.D;

function deviceA(): SimulatedDevice {
  return new SimulatedDevice(
    { devEui: eui64FromBeHex(A.devEui), joinEui: eui64FromBeHex(A.joinEui), macVersion: A.macVersion as MacVersion, roots: { appKey: hex(A.appKey) } },
    undefined,
    { randomDevNonce: () => A.devNonce },
  );
}

function deviceB(): SimulatedDevice {
  const d = new SimulatedDevice({
    devEui: eui64FromBeHex(B.devEui),
    joinEui: eui64FromBeHex(B.joinEui),
    macVersion: '1.1',
    roots: { appKey: hex(B.appKey), nwkKey: hex(B.nwkKey) },
  });
  // Vector B's DevNonce is 5: the device has sent five Join-requests before.
  return new SimulatedDevice(d.identity, { ...d.state, nextDevNonce: B.devNonce });
}

function upper(keys: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, v.toUpperCase()]));
}

describe('device simulator / spec-notes §1.12 vectors', () => {
  describe('A: 1.0.3 device', () => {
    it('join-request / random DevNonce 0x1234, MIC under AppKey / exact bytes', () => {
      assert.equal(deviceA().joinRequest().toString('hex').toUpperCase(), A.joinRequest);
    });
    it('join-accept / decrypted with AppKey, legacy MIC / accepted with JoinNonce 1, NetID, DevAddr and exact NwkSKey/AppSKey', () => {
      const d = deviceA();
      d.joinRequest();
      const phy = hex(A.joinAccept);
      const copy = Buffer.from(phy);
      const r = d.receiveJoinAccept(phy);
      assert.ok(r.accepted, JSON.stringify(r));
      assert.deepEqual(phy, copy, 'input not mutated');
      assert.equal(r.joinNonce, 1);
      assert.equal(r.netId, A.accept.netId);
      assert.equal(r.devAddr, A.accept.devAddr);
      assert.equal(r.optNeg, false);
      assert.equal(r.rxDelay, 1);
      assert.deepEqual(sessionKeysToHex(r.keys), upper(A.keys));
      assert.equal(d.state.lastJoinNonce, 1);
    });
    it('join-accept with EU868 CFList / 33 bytes / accepted, CFList returned, same keys', () => {
      const d = deviceA();
      d.joinRequest();
      const r = d.receiveJoinAccept(hex(A.withCfList.joinAccept));
      assert.ok(r.accepted, JSON.stringify(r));
      assert.equal(r.cfList?.toString('hex').toUpperCase(), A.withCfList.cfList);
      assert.deepEqual(sessionKeysToHex(r.keys), upper(A.keys));
    });
  });

  describe('B: 1.1 device, network 1.1 (OptNeg=1)', () => {
    it('lifetime keys / JSIntKey and JSEncKey from NwkKey and DevEUI', () => {
      const devEui = eui64FromBeHex(B.devEui);
      assert.equal(jsIntKey(hex(B.nwkKey), devEui).toString('hex').toUpperCase(), B.jsIntKey);
      assert.equal(jsEncKey(hex(B.nwkKey), devEui).toString('hex').toUpperCase(), B.jsEncKey);
    });
    it('join-request / DevNonce counter 5, MIC under NwkKey / exact bytes, counter advanced to 6', () => {
      const d = deviceB();
      assert.equal(d.joinRequest().toString('hex').toUpperCase(), B.joinRequest);
      assert.equal(d.state.nextDevNonce, 6);
    });
    it('join-accept / decrypted with NwkKey, 1.1 MIC (JSIntKey, 0xFF, JoinEUI, DevNonce) / accepted with exact 1.1 session keys', () => {
      const d = deviceB();
      d.joinRequest();
      const r = d.receiveJoinAccept(hex(B.joinAccept));
      assert.ok(r.accepted, JSON.stringify(r));
      assert.equal(r.optNeg, true);
      assert.equal(r.joinNonce, 1);
      assert.equal(r.keys.scheme, 'lorawan11');
      assert.deepEqual(sessionKeysToHex(r.keys), upper(B.keys));
    });
  });

  describe('C: 1.1 device, network 1.0.3 (OptNeg=0)', () => {
    it('join-accept / legacy MIC under NwkKey / accepted, NwkSKey and AppSKey both from NwkKey', () => {
      const d = deviceB();
      d.joinRequest();
      const r = d.receiveJoinAccept(hex(C.joinAccept));
      assert.ok(r.accepted, JSON.stringify(r));
      assert.equal(r.optNeg, false);
      assert.deepEqual(sessionKeysToHex(r.keys), upper(C.keys));
    });
    it('rejoin of any type after an OptNeg=0 session / refused by the device', () => {
      const d = deviceB();
      d.joinRequest();
      assert.ok(d.receiveJoinAccept(hex(C.joinAccept)).accepted);
      for (const t of [0, 1, 2] as const) assert.throws(() => d.rejoinRequest(t), { code: 'REJOIN_NEEDS_LORAWAN_11_SESSION' });
    });
  });

  describe('D: 1.1 device, rejoin type 1', () => {
    function joinedB(): SimulatedDevice {
      const d = deviceB();
      d.joinRequest();
      assert.ok(d.receiveJoinAccept(hex(B.joinAccept)).accepted);
      return d;
    }
    it('rejoin-request type 1 / RJcount1 0, MIC under JSIntKey / exact bytes, RJcount1 advanced', () => {
      const d = joinedB();
      assert.equal(d.rejoinRequest(1).toString('hex').toUpperCase(), D.rejoinRequest);
      assert.equal(d.state.nextRjCount1, 1);
    });
    it('rejoin-accept / decrypted with JSEncKey, MIC with JoinReqType 01 and RJcount1 / accepted with exact keys', () => {
      const d = joinedB();
      d.rejoinRequest(1);
      const r = d.receiveJoinAccept(hex(D.joinAccept));
      assert.ok(r.accepted, JSON.stringify(r));
      assert.equal(r.joinNonce, 2);
      assert.deepEqual(sessionKeysToHex(r.keys), upper(D.keys));
      assert.equal(d.state.lastJoinNonce, 2);
      assert.equal(d.state.nextRjCount1, 1, 'RJcount1 is not reset by a Join-accept');
    });
    it('rejoin-request type 0 / MIC under the session SNwkSIntKey, RJcount0 counts from 0', async () => {
      const { aesCmac } = await import('../../src/custody/primitives.js');
      const d = joinedB();
      const f0 = d.rejoinRequest(0);
      assert.equal(f0.length, 19);
      assert.equal(f0.readUInt16LE(13), 0);
      const mic = aesCmac(hex(B.keys.sNwkSIntKey), f0.subarray(0, 15)).subarray(0, 4);
      assert.deepEqual(f0.subarray(15), mic);
      const f2 = d.rejoinRequest(2);
      assert.equal(f2[1], 2);
      assert.equal(f2.readUInt16LE(13), 1);
      assert.equal(d.state.nextRjCount0, 2);
    });
  });
});
