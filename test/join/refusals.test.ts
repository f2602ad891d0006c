import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Eui64 } from '../../src/protocol/index.js';
import { SimulatedDevice } from '../../sim/device.js';
import { NS_ID_OF_000055, TOKENS, WORLDS, type World, randomEui, randomKey, startWorld, worldName } from '../helpers/world.js';
import { appSKeyReq, homeNsReq, joinReq, joinRequestFrame, rejoin1Frame, resultCode } from '../helpers/ts002.js';

/*
 * Every result code the Join Server emits, each from a real request over HTTP, and each refusal proven
 * to leave the device's join state and sessions exactly as they were (STYLE rule 5: a refusal burns no nonce).
 */

const JOIN_EUI = '70B3D57ED00000AA';

interface Fixture {
  devEui: string;
  appKey: Buffer;
  nwkKey?: Buffer;
}

async function snapshot(world: World, devEui: string, joinEui = JOIN_EUI) {
  if ((await world.storage.getDevice(devEui as Eui64)) === undefined) return { absent: true, devices: (await world.storage.listDevices({ limit: 1000 })).items.length };
  return {
    state: await world.storage.getJoinState(devEui as Eui64, joinEui as Eui64),
    sessions: await world.storage.listSessions(devEui as Eui64),
  };
}

/** Sends `req`, expects `code` (as spelt on the wire), and checks nothing changed for `devEui`. */
async function refused(world: World, devEui: string, req: unknown, token: string | undefined, code: string, headers?: Record<string, string>) {
  const before = await snapshot(world, devEui);
  const answer = await world.post(req, token, headers);
  assert.equal(resultCode(answer), code, JSON.stringify(answer));
  assert.equal(typeof answer.Result.Description, 'string');
  assert.equal(answer.PHYPayload, undefined);
  assert.equal(answer.NwkSKey ?? answer.FNwkSIntKey ?? answer.AppSKey, undefined, 'a refusal carries no key');
  assert.deepEqual(await snapshot(world, devEui), before, 'state unchanged');
  return answer;
}

for (const kind of WORLDS) {
  describe(`${worldName(kind)} / refusals`, () => {
    let world: World;
    let dev10: Fixture; // LoRaWAN 1.0.3, joined once with DevNonce 100
    let dev104: Fixture; // LoRaWAN 1.0.4, joined once with DevNonce 10
    let dev11: Fixture; // LoRaWAN 1.1, joined and rejoined (type 1, RJcount1 0)
    let sessionOf10: string;

    before(async () => {
      world = await startWorld(kind.storage, kind.custody);
      dev10 = { devEui: randomEui('10'), appKey: randomKey() };
      dev104 = { devEui: randomEui('14'), appKey: randomKey() };
      dev11 = { devEui: randomEui('11'), appKey: randomKey(), nwkKey: randomKey() };
      await world.provision({ devEui: dev10.devEui, joinEui: JOIN_EUI, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey: dev10.appKey, roamingNetIds: ['000077'] });
      await world.provision({ devEui: dev104.devEui, joinEui: JOIN_EUI, macVersion: '1.0.4', homeNetId: '000013', asId: 'as-1', appKey: dev104.appKey });
      await world.provision({ devEui: dev11.devEui, joinEui: JOIN_EUI, macVersion: '1.1', homeNetId: '000013', homeNsId: NS_ID_OF_000055, asId: 'as-1', appKey: dev11.appKey, nwkKey: dev11.nwkKey });
      const j10 = await world.post(joinReq({ phy: joinRequestFrame(dev10.appKey, dev10.devEui, JOIN_EUI, 100), devEui: dev10.devEui, joinEui: JOIN_EUI }), TOKENS.ns);
      assert.equal(resultCode(j10), 'Success');
      sessionOf10 = j10.SessionKeyID;
      const j104 = await world.post(joinReq({ phy: joinRequestFrame(dev104.appKey, dev104.devEui, JOIN_EUI, 10), devEui: dev104.devEui, joinEui: JOIN_EUI, macVersion: '1.0.4' }), TOKENS.ns);
      assert.equal(resultCode(j104), 'Success');
      const device11 = new SimulatedDevice({ devEui: dev11.devEui as Eui64, joinEui: JOIN_EUI as Eui64, macVersion: '1.1', roots: { appKey: dev11.appKey, nwkKey: dev11.nwkKey } });
      const j11 = await world.post(joinReq({ phy: device11.joinRequest(), devEui: dev11.devEui, joinEui: JOIN_EUI, macVersion: '1.1' }), TOKENS.ns);
      assert.equal(resultCode(j11), 'Success');
      assert.ok(device11.receiveJoinAccept(Buffer.from(j11.PHYPayload, 'hex')).accepted);
      const r11 = await world.post(joinReq({ phy: device11.rejoinRequest(1), devEui: dev11.devEui, joinEui: JOIN_EUI, macVersion: '1.1', messageType: 'RejoinReq', protocolVersion: '1.1' }), TOKENS.ns);
      assert.equal(resultCode(r11), 'Success');
    });
    after(async () => {
      await world?.stop();
    });

    const fresh10 = (devNonce: number, o: Partial<Parameters<typeof joinReq>[0]> = {}) =>
      joinReq({ phy: joinRequestFrame(dev10.appKey, dev10.devEui, JOIN_EUI, devNonce), devEui: dev10.devEui, joinEui: JOIN_EUI, ...o });

    describe('MICFailed', () => {
      test('Join-request with one MIC bit flipped / MICFailed, state unchanged', async () => {
        const phy = joinRequestFrame(dev10.appKey, dev10.devEui, JOIN_EUI, 200);
        phy[22]! ^= 0x01;
        await refused(world, dev10.devEui, joinReq({ phy, devEui: dev10.devEui, joinEui: JOIN_EUI }), TOKENS.ns, 'MICFailed');
      });
      test('Join-request MACed with another key / MICFailed, and the DevNonce stays usable', async () => {
        await refused(world, dev10.devEui, joinReq({ phy: joinRequestFrame(randomKey(), dev10.devEui, JOIN_EUI, 201), devEui: dev10.devEui, joinEui: JOIN_EUI }), TOKENS.ns, 'MICFailed');
        const ok = await world.post(fresh10(201), TOKENS.ns);
        assert.equal(resultCode(ok), 'Success', 'a MIC failure must not burn the DevNonce');
      });
      test('Rejoin-request type 1 with a bad MIC / MICFailed', async () => {
        await refused(world, dev11.devEui, joinReq({ phy: rejoin1Frame(randomKey(), dev11.devEui, JOIN_EUI, 5), devEui: dev11.devEui, joinEui: JOIN_EUI, macVersion: '1.1', messageType: 'RejoinReq', protocolVersion: '1.1' }), TOKENS.ns, 'MICFailed');
      });
    });

    describe('JoinReqFailed', () => {
      test('≤1.0.3 / DevNonce used before / JoinReqFailed, state unchanged', async () => {
        await refused(world, dev10.devEui, fresh10(100), TOKENS.ns, 'JoinReqFailed');
      });
      test('1.0.4 / DevNonce not greater than the last / JoinReqFailed for equal and lower', async () => {
        for (const devNonce of [10, 9, 0]) {
          await refused(world, dev104.devEui, joinReq({ phy: joinRequestFrame(dev104.appKey, dev104.devEui, JOIN_EUI, devNonce), devEui: dev104.devEui, joinEui: JOIN_EUI, macVersion: '1.0.4' }), TOKENS.ns, 'JoinReqFailed');
        }
      });
      test('1.1 / Rejoin-request type 1 with RJcount1 not greater / JoinReqFailed', async () => {
        await refused(world, dev11.devEui, joinReq({ phy: rejoin1Frame(dev11.nwkKey!, dev11.devEui, JOIN_EUI, 0), devEui: dev11.devEui, joinEui: JOIN_EUI, macVersion: '1.1', messageType: 'RejoinReq', protocolVersion: '1.1' }), TOKENS.ns, 'JoinReqFailed');
      });
      test('1.0.3 device asked to join as LoRaWAN 1.1 / JoinReqFailed', async () => {
        await refused(world, dev10.devEui, fresh10(300, { macVersion: '1.1' }), TOKENS.ns, 'JoinReqFailed');
      });
      test('1.0.3 device / RejoinReq / JoinReqFailed (rejoins exist only in 1.1)', async () => {
        await refused(world, dev10.devEui, joinReq({ phy: rejoin1Frame(dev10.appKey, dev10.devEui, JOIN_EUI, 0), devEui: dev10.devEui, joinEui: JOIN_EUI, macVersion: '1.1', messageType: 'RejoinReq' }), TOKENS.ns, 'JoinReqFailed');
      });
      test('home network without KEK and without clear permission / JoinReqFailed before any nonce is used', async () => {
        const devEui = randomEui('99');
        const appKey = randomKey();
        await world.provision({ devEui, joinEui: JOIN_EUI, macVersion: '1.0.3', homeNetId: '000099', asId: 'as-1', appKey });
        const answer = await refused(world, devEui, joinReq({ phy: joinRequestFrame(appKey, devEui, JOIN_EUI, 1), devEui, joinEui: JOIN_EUI, netId: '000099' }), TOKENS.noKeyNs, 'JoinReqFailed');
        assert.match(answer.Result.Description, /no KEK/);
        assert.equal((await world.storage.getJoinState(devEui as Eui64, JOIN_EUI as Eui64)).lastJoinNonce, 0);
      });
      test('JoinNonce at 2^24-1 / JoinReqFailed, never wraps', async () => {
        const devEui = randomEui('FF');
        const appKey = randomKey();
        const device = await world.provision({ devEui, joinEui: JOIN_EUI, macVersion: '1.0.4', homeNetId: '000013', asId: 'as-1', appKey });
        // Bring the counter to its last value through the storage contract itself.
        await world.storage.reserveJoin(device.devEui, device.joinEui, (current) => ({
          commit: { ...current, lastJoinNonce: 0xffffff },
          session: { sessionKeyId: 'AA', devEui: device.devEui, joinEui: device.joinEui, scheme: 'legacy', joinNonce: 0xffffff, devNonce: 0, netId: device.homeNetId, devAddr: '26000000' as never, createdAt: new Date() },
        }), { sessionLimit: 10 });
        const answer = await refused(world, devEui, joinReq({ phy: joinRequestFrame(appKey, devEui, JOIN_EUI, 1), devEui, joinEui: JOIN_EUI, macVersion: '1.0.4' }), TOKENS.ns, 'JoinReqFailed');
        assert.match(answer.Result.Description, /JoinNonce/);
      });
    });

    describe('UnknownDevEUI', () => {
      test('served JoinEUI, unknown DevEUI / UnknownDevEUI', async () => {
        const devEui = randomEui('0E');
        await refused(world, devEui, joinReq({ phy: joinRequestFrame(randomKey(), devEui, JOIN_EUI, 1), devEui, joinEui: JOIN_EUI }), TOKENS.ns, 'UnknownDevEUI');
      });
      test('AppSKeyReq / unknown SessionKeyID / UnknownDevEUI with DevEUI and SessionKeyID echoed', async () => {
        const a = await refused(world, dev10.devEui, appSKeyReq({ devEui: dev10.devEui, joinEui: JOIN_EUI, sessionKeyId: '0123456789ABCDEF' }), TOKENS.as, 'UnknownDevEUI');
        assert.equal(a.DevEUI, dev10.devEui);
        assert.equal(a.SessionKeyID, '0123456789ABCDEF');
      });
      test('AppSKeyReq / from an application server that is not the device\'s / UnknownDevEUI (reveals nothing)', async () => {
        await refused(world, dev10.devEui, appSKeyReq({ devEui: dev10.devEui, joinEui: JOIN_EUI, sessionKeyId: sessionOf10, asId: 'as-2' }), TOKENS.otherAs, 'UnknownDevEUI');
      });
      test('HomeNSReq / unknown DevEUI / UnknownDevEUI', async () => {
        await refused(world, 'FFFFFFFFFFFFFFF0', homeNsReq({ devEui: 'FFFFFFFFFFFFFFF0', joinEui: JOIN_EUI }), TOKENS.otherNs, 'UnknownDevEUI');
      });
    });

    describe('UnkownReceiver (sic, TS002 spelling)', () => {
      for (const pv of ['1.0', '1.1'] as const) {
        test(`JoinEUI not served / ProtocolVersion ${pv} / UnkownReceiver`, async () => {
          const joinEui = '1122334455667788';
          await refused(world, dev10.devEui, joinReq({ phy: joinRequestFrame(dev10.appKey, dev10.devEui, joinEui, 400), devEui: dev10.devEui, joinEui, protocolVersion: pv }), TOKENS.ns, 'UnkownReceiver');
        });
      }
      test('ReceiverID that is not an EUI / UnkownReceiver', async () => {
        await refused(world, dev10.devEui, { ...homeNsReq({ devEui: dev10.devEui, joinEui: JOIN_EUI }), ReceiverID: 'not-a-js' }, TOKENS.otherNs, 'UnkownReceiver');
      });
    });

    describe('UnknownSender', () => {
      test('no credentials / UnknownSender', async () => {
        await refused(world, dev10.devEui, fresh10(500), undefined, 'UnknownSender');
      });
      test('unknown bearer token / UnknownSender', async () => {
        await refused(world, dev10.devEui, fresh10(500), 'not-a-registered-token-000000000', 'UnknownSender');
      });
      test('valid token of another NetID than SenderID / UnknownSender', async () => {
        await refused(world, dev10.devEui, fresh10(500), TOKENS.otherNs, 'UnknownSender');
      });
      test('application server token on a JoinReq / UnknownSender', async () => {
        await refused(world, dev10.devEui, fresh10(500), TOKENS.as, 'UnknownSender');
      });
      test('network server token on an AppSKeyReq / UnknownSender', async () => {
        await refused(world, dev10.devEui, appSKeyReq({ devEui: dev10.devEui, joinEui: JOIN_EUI, sessionKeyId: sessionOf10 }), TOKENS.ns, 'UnknownSender');
      });
      test('AppSKeyReq with SenderID of another AS / UnknownSender', async () => {
        await refused(world, dev10.devEui, appSKeyReq({ devEui: dev10.devEui, joinEui: JOIN_EUI, sessionKeyId: sessionOf10, asId: 'as-2' }), TOKENS.as, 'UnknownSender');
      });
      test('1.1 / SenderNSID other than the one registered for the token / UnknownSender', async () => {
        const ok = await world.post({ ...homeNsReq({ devEui: dev11.devEui, joinEui: JOIN_EUI, netId: '000055', protocolVersion: '1.1' }), SenderNSID: NS_ID_OF_000055 }, TOKENS.nsidNs);
        assert.equal(resultCode(ok), 'Success', 'the registered NSID is accepted');
        const req = { ...homeNsReq({ devEui: dev11.devEui, joinEui: JOIN_EUI, netId: '000055', protocolVersion: '1.1' }), SenderNSID: '00000000000000B6' };
        await refused(world, dev11.devEui, req, TOKENS.nsidNs, 'UnknownSender');
      });
    });

    describe('ActivationDisallowed and NoRoamingAgreement', () => {
      test('JoinReq from a registered network that is not the home network / ActivationDisallowed', async () => {
        await refused(world, dev10.devEui, fresh10(600, { netId: '000042' }), TOKENS.otherNs, 'ActivationDisallowed');
      });
      test('1.1 / JoinReq from the home NetID but another NSID than the home NS / ActivationDisallowed', async () => {
        const phy = joinRequestFrame(dev11.nwkKey!, dev11.devEui, JOIN_EUI, 50);
        await refused(world, dev11.devEui, joinReq({ phy, devEui: dev11.devEui, joinEui: JOIN_EUI, macVersion: '1.1', protocolVersion: '1.1', senderNsId: '00000000000000C7' }), TOKENS.ns, 'ActivationDisallowed');
      });
      test('HomeNSReq from a network outside the device\'s roaming list / NoRoamingAgreement', async () => {
        await refused(world, dev10.devEui, homeNsReq({ devEui: dev10.devEui, joinEui: JOIN_EUI, netId: '000042' }), TOKENS.otherNs, 'NoRoamingAgreement');
        const allowed = await world.post(homeNsReq({ devEui: dev10.devEui, joinEui: JOIN_EUI, netId: '000077' }), TOKENS.clearNs);
        assert.equal(resultCode(allowed), 'Success');
      });
    });

    describe('MalformedRequest (1.0) / MalformedMessage (1.1)', () => {
      for (const [pv, code] of [['1.0', 'MalformedRequest'], ['1.1', 'MalformedMessage']] as const) {
        test(`${pv} / body is not JSON / ${code}, header salvaged`, async () => {
          const a = await refused(world, dev10.devEui, `{"ProtocolVersion":"${pv}","MessageType":"JoinReq","TransactionID":42,"SenderID":"000013",`, TOKENS.ns, code);
          assert.equal(a.MessageType, 'JoinAns');
          assert.equal(a.TransactionID, 42);
          assert.equal(a.ReceiverID, '000013');
        });
        test(`${pv} / PHYPayload missing / ${code} naming the field`, async () => {
          const req = fresh10(700, { protocolVersion: pv });
          delete req['PHYPayload'];
          const a = await refused(world, dev10.devEui, req, TOKENS.ns, code);
          assert.match(a.Result.Description, /PHYPayload/);
        });
      }
      test('PHYPayload not hex / MalformedRequest', async () => {
        await refused(world, dev10.devEui, fresh10(701, { phy: 'zz' + '00'.repeat(22) }), TOKENS.ns, 'MalformedRequest');
      });
      test('DevEUI differs from the frame / MalformedRequest', async () => {
        await refused(world, dev10.devEui, { ...fresh10(702), DevEUI: dev104.devEui }, TOKENS.ns, 'MalformedRequest');
      });
      test('ReceiverID differs from the frame\'s JoinEUI / MalformedRequest', async () => {
        await refused(world, dev10.devEui, { ...fresh10(703), ReceiverID: '70B3D57ED00000AB' }, TOKENS.ns, 'MalformedRequest');
      });
      test('MACVersion 1.2 / MalformedRequest', async () => {
        await refused(world, dev10.devEui, fresh10(704, { macVersion: '1.2' }), TOKENS.ns, 'MalformedRequest');
      });
      test('RxDelay out of range / MalformedRequest', async () => {
        await refused(world, dev10.devEui, fresh10(705, { rxDelay: 16 }), TOKENS.ns, 'MalformedRequest');
      });
      test('a Join-request frame in a RejoinReq / MalformedRequest', async () => {
        await refused(world, dev10.devEui, fresh10(706, { messageType: 'RejoinReq' }), TOKENS.ns, 'MalformedRequest');
      });
      test('MessageType the Join Server does not serve / MalformedRequest', async () => {
        const a = await refused(world, dev10.devEui, { ...fresh10(707), MessageType: 'PRStartReq' }, TOKENS.ns, 'MalformedRequest');
        assert.equal(a.MessageType, 'PRStartAns');
      });
    });

    describe('FrameSizeError, InvalidProtocolVersion, Other', () => {
      test('PHYPayload one byte short / FrameSizeError', async () => {
        await refused(world, dev10.devEui, fresh10(800, { phy: joinRequestFrame(dev10.appKey, dev10.devEui, JOIN_EUI, 800).subarray(0, 22) }), TOKENS.ns, 'FrameSizeError');
      });
      test('ProtocolVersion 2.0 / InvalidProtocolVersion', async () => {
        await refused(world, dev10.devEui, fresh10(801, { protocolVersion: '2.0' as never }), TOKENS.ns, 'InvalidProtocolVersion');
      });
      test('our own failure (root key missing from custody) / Other, with no internal detail', async () => {
        const devEui = randomEui('07');
        const appKey = randomKey();
        const device = await world.provision({ devEui, joinEui: JOIN_EUI, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey });
        await world.running.joinkeep.custody.deleteKey(device.appKeyHandle);
        const a = await refused(world, devEui, joinReq({ phy: joinRequestFrame(appKey, devEui, JOIN_EUI, 1), devEui, joinEui: JOIN_EUI }), TOKENS.ns, 'Other');
        assert.doesNotMatch(a.Result.Description, /root\//, 'key handles stay internal');
      });
    });

    test('audit / refusals of authenticated peers are recorded with their result code', async () => {
      const page = await world.storage.listAudit({ subject: `device/${dev10.devEui}`, limit: 1000 });
      const outcomes = new Set(page.items.map((e) => e.outcome));
      for (const code of ['Success', 'MICFailed', 'JoinReqFailed', 'ActivationDisallowed', 'NoRoamingAgreement']) assert.ok(outcomes.has(code), code);
    });
  });
}
