import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { aesKeyWrap } from '../../src/custody/primitives.js';
import { devAddrFromBeHex, eui64FromBeHex, netIdFromBeHex } from '../../src/protocol/index.js';
import { ApplicationServerClient } from '../../sim/application-server.js';
import { SimulatedDevice } from '../../sim/device.js';
import { NetworkServerClient } from '../../sim/network-server.js';
import { type FakeJoinServer, startFakeJoinServer } from './helpers/fake-join-server.js';
import { hex, vectors } from './helpers/vectors.js';

const A = vectors.A;
const E = vectors.E;
const nsKek = { label: 'ns-000013', key: hex(E.nwkSKeyA.kek) };
const asKek = { label: 'as-1', key: hex(E.appSKeyA.kek) };

/** Answers every JoinReq with vector A's JoinAns (§2.8), echoing the header as a Join Server must. */
function vectorAJoinAns(req: Record<string, unknown>): { body: unknown } {
  return {
    body: {
      ProtocolVersion: req['ProtocolVersion'], SenderID: String(req['ReceiverID']).toUpperCase(), ReceiverID: String(req['SenderID']).toUpperCase(),
      TransactionID: req['TransactionID'], MessageType: 'JoinAns', Result: { ResultCode: 'Success' },
      ...(req['SenderNSID'] ? { ReceiverNSID: String(req['SenderNSID']).toUpperCase() } : {}),
      PHYPayload: A.joinAccept, Lifetime: 604800,
      NwkSKey: { KEKLabel: nsKek.label, AESKey: E.nwkSKeyA.wrapped },
      AppSKey: { KEKLabel: asKek.label, AESKey: E.appSKeyA.wrapped },
      SessionKeyID: '01923F0A6B7C4D5E8F90A1B2C3D4E5F6',
    },
  };
}

function device(): SimulatedDevice {
  return new SimulatedDevice(
    { devEui: eui64FromBeHex(A.devEui), joinEui: eui64FromBeHex(A.joinEui), macVersion: '1.0.3', roots: { appKey: hex(A.appKey) } },
    undefined,
    { randomDevNonce: () => A.devNonce },
  );
}

describe('network server simulator / TS002 client', () => {
  let js: FakeJoinServer;
  after(() => js?.close());

  for (const style of ['tts', 'chirpstack'] as const) {
    it(`${style} style / JoinReq of vector A / wire form of ${style}, keys unwrapped equal the device's`, async () => {
      js ??= await startFakeJoinServer(vectorAJoinAns);
      const ns = new NetworkServerClient({
        url: js.url, token: 'tok', netId: netIdFromBeHex('000013'), kek: nsKek, style,
        ...(style === 'tts' ? { nsId: eui64FromBeHex('000000000000ABCD') } : {}),
      });
      const d = device();
      const ans = await ns.joinReq({
        phyPayload: d.joinRequest(), devEui: d.identity.devEui, joinEui: d.identity.joinEui, macVersion: '1.0.3',
        devAddr: devAddrFromBeHex('26011A2B'), dlSettings: 0x03, rxDelay: 1,
      });
      assert.ok(ans.ok, JSON.stringify(ans));
      assert.deepEqual(ans.issues, []);
      const sent = js.requests.at(-1)!;
      assert.equal(sent.headers.authorization, 'Bearer tok');
      assert.equal(sent.headers['content-type'], 'application/json');
      if (style === 'tts') {
        assert.equal(sent.body['ProtocolVersion'], '1.1');
        assert.equal(sent.body['SenderNSID'], '000000000000ABCD');
        assert.equal(sent.body['TransactionID'], 0);
        assert.equal(sent.body['PHYPayload'], A.joinRequest);
        assert.equal(sent.body['MACVersion'], '1.0.3');
      } else {
        assert.equal(sent.body['ProtocolVersion'], '1.0');
        assert.equal(sent.body['SenderNSID'], undefined);
        assert.notEqual(sent.body['TransactionID'], 0);
        assert.equal(sent.body['PHYPayload'], A.joinRequest.toLowerCase());
        assert.equal(sent.body['ReceiverID'], '70b3d57ed0000001');
      }
      const accepted = d.receiveJoinAccept(ans.phyPayload);
      assert.ok(accepted.accepted && accepted.keys.scheme === 'legacy');
      assert.ok(ans.nsKeys.scheme === 'legacy' && ans.nsKeys.nwkSKey.equals(accepted.keys.nwkSKey));
      const as = new ApplicationServerClient({ url: js.url, token: 'as', asId: 'as-1', kek: asKek, style });
      const app = as.unwrapForwarded(ans.appSKeyEnvelope);
      assert.ok(app.ok && app.appSKey.equals(accepted.keys.appSKey));
    });
  }

  it('chirpstack style / MACVersion of a 1.1 device / sent as "1.1.0"', async () => {
    js ??= await startFakeJoinServer(vectorAJoinAns);
    const ns = new NetworkServerClient({ url: js.url, token: 't', netId: netIdFromBeHex('000013'), kek: nsKek, style: 'chirpstack' });
    await ns.joinReq({ phyPayload: hex(vectors.B.joinRequest), devEui: eui64FromBeHex(vectors.B.devEui), joinEui: eui64FromBeHex(vectors.B.joinEui), macVersion: '1.1', devAddr: devAddrFromBeHex('26011A2B'), dlSettings: 0x83, rxDelay: 1 });
    assert.equal(js.requests.at(-1)!.body['MACVersion'], '1.1.0');
  });

  it('answer that breaks TS002 header rules / each deviation reported as an issue', async () => {
    const bad = await startFakeJoinServer((req) => ({
      status: 400,
      body: { ProtocolVersion: '1.1', SenderID: 'x', ReceiverID: req['SenderID'], TransactionID: 99, MessageType: 'JoinAns', Result: { ResultCode: 'MalformedMessage' } },
    }));
    try {
      const ns = new NetworkServerClient({ url: bad.url, token: 't', netId: netIdFromBeHex('000013'), kek: nsKek, style: 'chirpstack' });
      const ans = await ns.joinReq({ phyPayload: hex(A.joinRequest), devEui: eui64FromBeHex(A.devEui), joinEui: eui64FromBeHex(A.joinEui), macVersion: '1.0.3', devAddr: devAddrFromBeHex('26011A2B'), dlSettings: 3, rxDelay: 1 });
      assert.ok(!ans.ok && ans.kind === 'result' && ans.resultCode === 'MalformedMessage');
      assert.equal(ans.issues.length, 5, ans.issues.join('\n'));
    } finally {
      await bad.close();
    }
  });

  it('NS KEK label differs from the envelope / bad-answer naming the label', async () => {
    js ??= await startFakeJoinServer(vectorAJoinAns);
    const ns = new NetworkServerClient({ url: js.url, token: 't', netId: netIdFromBeHex('000013'), kek: { ...nsKek, label: 'other' }, style: 'tts' });
    const ans = await ns.joinReq({ phyPayload: hex(A.joinRequest), devEui: eui64FromBeHex(A.devEui), joinEui: eui64FromBeHex(A.joinEui), macVersion: '1.0.3', devAddr: devAddrFromBeHex('26011A2B'), dlSettings: 3, rxDelay: 1 });
    assert.ok(!ans.ok && ans.kind === 'bad-answer' && /ns-000013/.test(ans.detail));
  });

  it('RFC 3394 §4.1 vector / aesKeyWrap as the factory wraps root keys', () => {
    assert.equal(aesKeyWrap(hex(E.rfc3394.kek), hex(E.rfc3394.key)).toString('hex').toUpperCase(), E.rfc3394.wrapped);
  });
});
