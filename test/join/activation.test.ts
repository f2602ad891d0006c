import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { aesKeyUnwrap } from '../../src/custody/primitives.js';
import type { Eui64, MacVersion } from '../../src/protocol/index.js';
import { SimulatedDevice } from '../../sim/device.js';
import { KEKS, TOKENS, WORLDS, type World, randomEui, randomKey, startWorld, worldName } from '../helpers/world.js';
import { appSKeyReq, homeNsReq, joinReq, joinRequestFrame, resultCode } from '../helpers/ts002.js';
import { VECTOR_A } from '../helpers/spec-vectors.js';

/*
 * Activation end to end over real HTTP, on SQLite and PostgreSQL. Byte-exact expectations come from
 * spec-notes §1.12 vectors A–E, which were checked against the published tests of ChirpStack
 * (lrwn/src/keys.rs, lrwn/src/phy_payload.rs), The Things Stack (pkg/crypto/key_derivation_test.go) and
 * RFC 3394 §4.1; everything else is checked by the device simulator computing what a device computes.
 */

const A = VECTOR_A;
const B = {
  nwkKey: Buffer.from('000102030405060708090A0B0C0D0E0F', 'hex'),
  appKey: Buffer.from('0F0E0D0C0B0A09080706050403020100', 'hex'),
  joinEui: '70B3D57ED0000001',
  devEui: '0004A30B001C0531',
  joinRequest: '00010000D07ED5B37031051C000BA304000500DCA57233',
  joinAccept: '20113A76B5B61E09AFCD035366C5BD61C7',
  fNwkSIntKey: '82A91112BD93BC03C5A65531D47457E0',
  sNwkSIntKey: 'BF57A0E05C272DB2F84F06119A3975B1',
  nwkSEncKey: '5409AB53FFBA02B69813114247E457F3',
  appSKey: 'EC2ADEF4A9024DB7E04D57F2AC037AFB',
};
const C = { joinAccept: '20B81CDD996F9F986F9705599EBC5649EF', nwkSKey: '912E47A5F89E12A043AD235477E30591', appSKey: '47F29F805E143E4EC5D0F97BA856CB1A' };
const D = {
  rejoinRequest: 'C001010000D07ED5B37031051C000BA304000000B393A387',
  joinAccept: '20F8D00FA19A2C8080D48D4E16E7ECB145',
  fNwkSIntKey: '3962F7547DCA95AC95ABEA9014CDA320',
  sNwkSIntKey: '3E954E9A0CAE86CA0B6C66A8061FDB24',
  nwkSEncKey: '95A89436060EA4F1A9457D44247E25A1',
  appSKey: '2E7E32A547F2162DBA8620A111FC9DB3',
};

function unwrap(envelope: { KEKLabel: string; AESKey: string }, kek: { label: string; key: Buffer }): string {
  assert.equal(envelope.KEKLabel, kek.label);
  return aesKeyUnwrap(kek.key, Buffer.from(envelope.AESKey, 'hex')).toString('hex').toUpperCase();
}

/** A simulated device joining through the home NS; returns the device's outcome and the JoinAns. */
async function joinWithDevice(world: World, device: SimulatedDevice, style: 'tts' | 'chirpstack', extra: Partial<Parameters<typeof joinReq>[0]> = {}) {
  const { devEui, joinEui, macVersion } = device.identity;
  const phy = device.joinRequest();
  const chirp = style === 'chirpstack';
  const req = joinReq({
    phy: chirp ? `0x${phy.toString('hex')}` : phy.toString('hex').toUpperCase(),
    devEui: chirp ? devEui.toLowerCase() : devEui,
    joinEui: chirp ? joinEui.toLowerCase() : joinEui,
    macVersion: chirp ? (macVersion === '1.1' ? '1.1.0' : macVersion) : macVersion === '1.0.0' ? '1.0' : macVersion,
    transactionId: chirp ? 0x7fffabcd : 0,
    dlSettings: macVersion === '1.1' ? (chirp ? '83' : '03') : '03',
    devAddr: chirp ? '26abcdef' : '26ABCDEF',
    ...extra,
  });
  const answer = await world.post(req, TOKENS.ns);
  assert.equal(resultCode(answer), 'Success', JSON.stringify(answer.Result));
  const outcome = device.receiveJoinAccept(Buffer.from(answer.PHYPayload, 'hex'));
  assert.ok(outcome.accepted, `device dropped the accept: ${!outcome.accepted ? outcome.detail : ''}`);
  return { answer, outcome };
}

for (const kind of WORLDS) {
  describe(`${worldName(kind)} / activation`, () => {
    let world: World;
    before(async () => {
      world = await startWorld(kind.storage, kind.custody);
    });
    after(async () => {
      await world?.stop();
    });

    test('1.0.3 / published vector A / JoinAns byte for byte, JoinNonce 1, keys wrapped for NS and AS only', async () => {
      await world.provision({ devEui: A.devEui, joinEui: A.joinEui, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey: A.appKey });
      const answer = await world.post(joinReq({ phy: A.joinRequest, devEui: A.devEui, joinEui: A.joinEui, transactionId: 3735928559, senderToken: 'ABCD' }), TOKENS.ns);
      assert.equal(resultCode(answer), 'Success');
      assert.equal(answer.MessageType, 'JoinAns');
      assert.equal(answer.ProtocolVersion, '1.0');
      assert.equal(answer.SenderID, A.joinEui);
      assert.equal(answer.ReceiverID, '000013');
      assert.equal(answer.TransactionID, 3735928559);
      assert.equal(answer.ReceiverToken, 'ABCD');
      assert.equal(answer.PHYPayload, A.joinAccept);
      assert.deepEqual(answer.NwkSKey, { KEKLabel: KEKS.ns.label, AESKey: A.nwkSKeyWrapped });
      assert.deepEqual(answer.AppSKey, { KEKLabel: KEKS.as.label, AESKey: A.appSKeyWrapped });
      assert.equal(answer.Lifetime, 0);
      assert.match(answer.SessionKeyID, /^[0-9A-F]{32}$/);
      assert.equal(answer.FNwkSIntKey, undefined, 'a 1.0 session has only NwkSKey');
      const state = await world.storage.getJoinState(A.devEui as Eui64, A.joinEui as Eui64);
      assert.equal(state.lastJoinNonce, 1);
      assert.equal(state.lastDevNonce, 0x1234);

      const appSKey = await world.post(appSKeyReq({ devEui: A.devEui, joinEui: A.joinEui, sessionKeyId: answer.SessionKeyID }), TOKENS.as);
      assert.equal(resultCode(appSKey), 'Success');
      assert.equal(appSKey.MessageType, 'AppSKeyAns');
      assert.equal(appSKey.DevEUI, A.devEui);
      assert.equal(appSKey.SessionKeyID, answer.SessionKeyID);
      assert.deepEqual(appSKey.AppSKey, { KEKLabel: KEKS.as.label, AESKey: A.appSKeyWrapped });
    });

    test('1.0.3 / published vector A with EU868 CFList / 33-byte accept', async () => {
      const devEui = randomEui('00CF');
      await world.provision({ devEui, joinEui: A.joinEui, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey: A.appKey });
      const answer = await world.post(joinReq({ phy: joinRequestFrame(A.appKey, devEui, A.joinEui, 0x1234), devEui, joinEui: A.joinEui, cfList: A.cfList }), TOKENS.ns);
      // Legacy accepts do not involve the DevEUI, so vector A's CFList accept applies to any DevEUI at JoinNonce 1.
      assert.equal(answer.PHYPayload, A.joinAcceptWithCfList);
    });

    test('1.1 / published vector B, then rejoin type 1 vector D / JoinNonce 1 then 2, all 1.1 keys exact', async () => {
      await world.provision({ devEui: B.devEui, joinEui: B.joinEui, macVersion: '1.1', homeNetId: '000013', asId: 'as-1', appKey: B.appKey, nwkKey: B.nwkKey });
      // The NS sends DLSettings 03; Joinkeep sets OptNeg because it answers with the 1.1 derivation.
      const join = await world.post(joinReq({ phy: B.joinRequest, devEui: B.devEui, joinEui: B.joinEui, macVersion: '1.1', protocolVersion: '1.1', senderNsId: '00000000000000A1', dlSettings: '03' }), TOKENS.ns);
      assert.equal(resultCode(join), 'Success');
      assert.equal(join.PHYPayload, B.joinAccept);
      assert.equal(join.ReceiverNSID, '00000000000000A1');
      assert.equal(join.NwkSKey, undefined, 'a 1.1 session has three network keys');
      assert.equal(unwrap(join.FNwkSIntKey, KEKS.ns), B.fNwkSIntKey);
      assert.equal(unwrap(join.SNwkSIntKey, KEKS.ns), B.sNwkSIntKey);
      assert.equal(unwrap(join.NwkSEncKey, KEKS.ns), B.nwkSEncKey);
      assert.equal(unwrap(join.AppSKey, KEKS.as), B.appSKey);

      const rejoin = await world.post(joinReq({ phy: D.rejoinRequest, devEui: B.devEui, joinEui: B.joinEui, macVersion: '1.1', protocolVersion: '1.1', messageType: 'RejoinReq', dlSettings: '83' }), TOKENS.ns);
      assert.equal(resultCode(rejoin), 'Success');
      assert.equal(rejoin.MessageType, 'RejoinAns');
      assert.equal(rejoin.PHYPayload, D.joinAccept);
      assert.equal(unwrap(rejoin.FNwkSIntKey, KEKS.ns), D.fNwkSIntKey);
      assert.equal(unwrap(rejoin.SNwkSIntKey, KEKS.ns), D.sNwkSIntKey);
      assert.equal(unwrap(rejoin.NwkSEncKey, KEKS.ns), D.nwkSEncKey);
      assert.equal(unwrap(rejoin.AppSKey, KEKS.as), D.appSKey);
      const state = await world.storage.getJoinState(B.devEui as Eui64, B.joinEui as Eui64);
      assert.equal(state.lastJoinNonce, 2);
      assert.equal(state.lastRjCount1, 0);

      // Both sessions stay available to the AS by SessionKeyID.
      for (const [sessionKeyId, expected] of [[join.SessionKeyID, B.appSKey], [rejoin.SessionKeyID, D.appSKey]]) {
        const a = await world.post(appSKeyReq({ devEui: B.devEui, joinEui: B.joinEui, sessionKeyId, protocolVersion: '1.1' }), TOKENS.as);
        assert.equal(unwrap(a.AppSKey, KEKS.as), expected);
      }
    });

    test('1.1 device on a 1.0.3 network / published vector C / OptNeg 0, everything from NwkKey', async () => {
      const devEui = randomEui('0011');
      await world.provision({ devEui, joinEui: B.joinEui, macVersion: '1.1', homeNetId: '000013', asId: 'as-1', appKey: B.appKey, nwkKey: B.nwkKey });
      const answer = await world.post(joinReq({ phy: joinRequestFrame(B.nwkKey, devEui, B.joinEui, 5), devEui, joinEui: B.joinEui, macVersion: '1.0.3', dlSettings: '83' }), TOKENS.ns);
      assert.equal(resultCode(answer), 'Success');
      // Legacy formulas do not involve the DevEUI, so vector C applies at JoinNonce 1 to any DevEUI.
      assert.equal(answer.PHYPayload, C.joinAccept);
      assert.equal(unwrap(answer.NwkSKey, KEKS.ns), C.nwkSKey);
      assert.equal(unwrap(answer.AppSKey, KEKS.as), C.appSKey);
      const a = await world.post(appSKeyReq({ devEui, joinEui: B.joinEui, sessionKeyId: answer.SessionKeyID }), TOKENS.as);
      assert.equal(unwrap(a.AppSKey, KEKS.as), C.appSKey, 'AppSKeyReq re-derives the OptNeg=0 AppSKey from NwkKey');
    });

    for (const macVersion of ['1.0.0', '1.0.1', '1.0.2', '1.0.3', '1.0.4', '1.1'] as MacVersion[]) {
      for (const style of ['tts', 'chirpstack'] as const) {
        test(`${macVersion} / ${style}-style requests / device accepts, its keys equal the unwrapped NS and AS keys, JoinNonce increases`, async () => {
          const devEui = randomEui();
          const roots = { appKey: randomKey(), nwkKey: macVersion === '1.1' ? randomKey() : undefined };
          await world.provision({ devEui, joinEui: A.joinEui, macVersion, homeNetId: '000013', asId: 'as-1', ...roots });
          const device = new SimulatedDevice({ devEui: devEui as Eui64, joinEui: A.joinEui as Eui64, macVersion, roots });
          for (const expectedJoinNonce of [1, 2, 3]) {
            const { answer, outcome } = await joinWithDevice(world, device, style);
            assert.ok(outcome.accepted);
            assert.equal(outcome.joinNonce, expectedJoinNonce);
            assert.equal(outcome.netId, '000013');
            if (outcome.keys.scheme === 'legacy') {
              assert.equal(macVersion === '1.1', false);
              assert.equal(unwrap(answer.NwkSKey, KEKS.ns), outcome.keys.nwkSKey.toString('hex').toUpperCase());
            } else {
              assert.equal(unwrap(answer.FNwkSIntKey, KEKS.ns), outcome.keys.fNwkSIntKey.toString('hex').toUpperCase());
              assert.equal(unwrap(answer.SNwkSIntKey, KEKS.ns), outcome.keys.sNwkSIntKey.toString('hex').toUpperCase());
              assert.equal(unwrap(answer.NwkSEncKey, KEKS.ns), outcome.keys.nwkSEncKey.toString('hex').toUpperCase());
            }
            assert.equal(unwrap(answer.AppSKey, KEKS.as), outcome.keys.appSKey.toString('hex').toUpperCase());
          }
        });
      }
    }

    test('1.0.4 / DevNonce counter / first DevNonce 0 is accepted', async () => {
      const devEui = randomEui();
      const appKey = randomKey();
      await world.provision({ devEui, joinEui: A.joinEui, macVersion: '1.0.4', homeNetId: '000013', asId: 'as-1', appKey });
      const device = new SimulatedDevice({ devEui: devEui as Eui64, joinEui: A.joinEui as Eui64, macVersion: '1.0.4', roots: { appKey } });
      const { outcome } = await joinWithDevice(world, device, 'tts');
      assert.ok(outcome.accepted && outcome.answeredTo.kind === 'join-request' && outcome.answeredTo.devNonce === 0);
    });

    for (const rejoinType of [0, 2] as const) {
      test(`1.1 / rejoin type ${rejoinType} forwarded by the home NS / accept under JSEncKey, device accepts, keys match`, async () => {
        const devEui = randomEui();
        const roots = { appKey: randomKey(), nwkKey: randomKey() };
        await world.provision({ devEui, joinEui: A.joinEui, macVersion: '1.1', homeNetId: '000013', asId: 'as-1', ...roots });
        const device = new SimulatedDevice({ devEui: devEui as Eui64, joinEui: A.joinEui as Eui64, macVersion: '1.1', roots });
        await joinWithDevice(world, device, 'tts');
        const phy = device.rejoinRequest(rejoinType);
        // Types 0/2 carry no JoinEUI: the NS names the Join Server in ReceiverID.
        const answer = await world.post(joinReq({ phy, devEui, joinEui: A.joinEui, macVersion: '1.1', messageType: 'RejoinReq', protocolVersion: '1.1', dlSettings: '83' }), TOKENS.ns);
        assert.equal(resultCode(answer), 'Success', JSON.stringify(answer.Result));
        const outcome = device.receiveJoinAccept(Buffer.from(answer.PHYPayload, 'hex'));
        assert.ok(outcome.accepted, !outcome.accepted ? outcome.detail : '');
        assert.equal(outcome.joinNonce, 2);
        assert.equal(outcome.keys.scheme, 'lorawan11');
        if (outcome.keys.scheme === 'lorawan11') assert.equal(unwrap(answer.SNwkSIntKey, KEKS.ns), outcome.keys.sNwkSIntKey.toString('hex').toUpperCase());
        assert.equal(unwrap(answer.AppSKey, KEKS.as), outcome.keys.appSKey.toString('hex').toUpperCase());
      });
    }

    test('network server allowed clear keys / no KEK / NwkSKey in clear with empty KEKLabel, AppSKey still wrapped for the AS', async () => {
      const devEui = randomEui();
      const appKey = randomKey();
      await world.provision({ devEui, joinEui: A.joinEui, macVersion: '1.0.3', homeNetId: '000077', asId: 'as-1', appKey });
      const device = new SimulatedDevice({ devEui: devEui as Eui64, joinEui: A.joinEui as Eui64, macVersion: '1.0.3', roots: { appKey } });
      const phy = device.joinRequest();
      const answer = await world.post(joinReq({ phy, devEui, joinEui: A.joinEui, netId: '000077' }), TOKENS.clearNs);
      assert.equal(resultCode(answer), 'Success');
      const outcome = device.receiveJoinAccept(Buffer.from(answer.PHYPayload, 'hex'));
      assert.ok(outcome.accepted && outcome.keys.scheme === 'legacy');
      assert.equal(outcome.netId, '000077');
      assert.deepEqual(answer.NwkSKey, { KEKLabel: '', AESKey: outcome.keys.nwkSKey.toString('hex').toUpperCase() });
      assert.equal(answer.AppSKey.KEKLabel, KEKS.as.label);
    });

    test('device without an application server / JoinAns has SessionKeyID and no AppSKey', async () => {
      const devEui = randomEui();
      const appKey = randomKey();
      await world.provision({ devEui, joinEui: A.joinEui, macVersion: '1.0.2', homeNetId: '000013', appKey });
      const device = new SimulatedDevice({ devEui: devEui as Eui64, joinEui: A.joinEui as Eui64, macVersion: '1.0.2', roots: { appKey } });
      const { answer } = await joinWithDevice(world, device, 'tts');
      assert.equal(answer.AppSKey, undefined);
      assert.match(answer.SessionKeyID, /^[0-9A-F]{32}$/);
    });

    test('HomeNSReq / any registered network by default / HNetID, and HNSID only under 1.1', async () => {
      const devEui = randomEui();
      await world.provision({ devEui, joinEui: A.joinEui, macVersion: '1.1', homeNetId: '000013', homeNsId: '00000000000000A1', asId: 'as-1', appKey: randomKey(), nwkKey: randomKey() });
      const v10 = await world.post(homeNsReq({ devEui, joinEui: A.joinEui }), TOKENS.otherNs);
      assert.equal(resultCode(v10), 'Success');
      assert.equal(v10.MessageType, 'HomeNSAns');
      assert.equal(v10.HNetID, '000013');
      assert.equal(v10.HNSID, undefined);
      const v11 = await world.post(homeNsReq({ devEui, joinEui: A.joinEui, protocolVersion: '1.1' }), TOKENS.otherNs);
      assert.equal(v11.HNSID, '00000000000000A1');
    });

    test('HTTP / Content-Type with charset, without, or absent / all answered', async () => {
      const devEui = randomEui();
      await world.provision({ devEui, joinEui: A.joinEui, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey: randomKey() });
      for (const contentType of ['application/json; charset=utf-8', 'application/json', 'text/plain']) {
        const a = await world.post(homeNsReq({ devEui, joinEui: A.joinEui }), TOKENS.otherNs, { 'content-type': contentType });
        assert.equal(resultCode(a), 'Success', contentType);
      }
      const res = await fetch(world.url, { method: 'POST', headers: { authorization: `Bearer ${TOKENS.otherNs}` }, body: JSON.stringify(homeNsReq({ devEui, joinEui: A.joinEui })) });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).Result.ResultCode, 'Success');
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    });

    test('concurrency / the same Join-request sent 12 times at once (NS retries) / exactly one Success', async () => {
      const devEui = randomEui();
      const appKey = randomKey();
      await world.provision({ devEui, joinEui: A.joinEui, macVersion: '1.0.4', homeNetId: '000013', asId: 'as-1', appKey });
      const req = joinReq({ phy: joinRequestFrame(appKey, devEui, A.joinEui, 7), devEui, joinEui: A.joinEui, macVersion: '1.0.4' });
      const answers = await Promise.all(Array.from({ length: 12 }, () => world.post(req, TOKENS.ns)));
      assert.equal(answers.filter((a) => resultCode(a) === 'Success').length, 1);
      assert.deepEqual(new Set(answers.filter((a) => resultCode(a) !== 'Success').map(resultCode)), new Set(['JoinReqFailed']));
      assert.equal((await world.storage.getJoinState(devEui as Eui64, A.joinEui as Eui64)).lastJoinNonce, 1);
    });
  });
}
