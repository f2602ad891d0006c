import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac } from '../../src/custody/primitives.js';
import {
  type JoinReqType,
  assembleJoinAccept,
  decodeRejoinRequest,
  devAddrFromBeHex,
  encodeJoinAcceptBody,
  encodeJoinRequestMicInput,
  eui64FromBeHex,
  joinAcceptCipherInput,
  joinAcceptMicInput11,
  joinAcceptMicInputLegacy,
  legacySessionKeyBlock,
  lifetimeKeyBlock,
  lorawan11SessionKeyBlock,
  netIdFromBeHex,
} from '../../src/protocol/index.js';
import { type VectorSource, cite, hex, loadVectors, toHexUpper } from '../helpers/vectors.js';

/*
 * lora-packet (npm, CommonJS, MIT; independent implementation on crypto-js and aes-cmac) is a second
 * opinion on our frames and keys. It keeps multi-byte fields big-endian in its objects (its README:
 * "DevAddr and FCnt are stored big-endian"), which is also how our vector files write them.
 */
type LoraPacketLib = typeof import('lora-packet').default;
const lp = createRequire(import.meta.url)('lora-packet') as LoraPacketLib;

interface JoinFile {
  joinRequests: { name: string; source: VectorSource[]; key: string | null; fields: { joinEui: string; devEui: string; devNonce: number }; mic: string; phyPayload: string }[];
  rejoinRequests: { name: string; source: VectorSource[]; key: string; fields: { rejoinType: number; netId?: string; joinEui?: string; devEui: string; rjCount: number }; mic: string; phyPayload: string }[];
  joinAccepts: {
    name: string; source: VectorSource[]; micFormula: 'legacy' | 'lorawan11'; joinReqType?: number; joinEui?: string; devNonce?: number;
    micKey: string; encKey: string | null; fields: { joinNonce: number; netId: string; devAddr: string; dlSettings: string; rxDelay: number; cfList?: string };
    body: string; mic: string; phyPayload: string | null;
  }[];
}
interface KeyFile {
  vectors: { name: string; source: VectorSource[]; formula: 'legacy' | 'lorawan11' | 'lifetime'; rootKey: string; inputs: { joinNonce?: number; netId?: string; joinEui?: string; devEui?: string; devNonce?: number }; expected: Record<string, string> }[];
}
const join = loadVectors<JoinFile>('lorawan-join');
const keys = loadVectors<KeyFile>('key-derivation');

const u16be = (n: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const u24be = (n: number): Buffer => { const b = Buffer.alloc(3); b.writeUIntBE(n, 0, 3); return b; };
const lower = (h: string): string => h.replace(/\s+/g, '').toLowerCase();

describe('lora-packet cross-check / Join-request', () => {
  for (const t of join.joinRequests.filter((x) => x.key !== null)) {
    it(`Join-request / ${t.name}: lora-packet parses our frame to the same fields and MIC [${cite(t.source)}]`, () => {
      const key = hex(t.key ?? '');
      const ours = Buffer.concat([encodeJoinRequestMicInput({ joinEui: eui64FromBeHex(t.fields.joinEui), devEui: eui64FromBeHex(t.fields.devEui), devNonce: t.fields.devNonce }), hex(t.mic)]);
      const p = lp.fromWire(ours);
      assert.equal(p.getMType(), 'Join Request');
      assert.equal(p.AppEUI?.toString('hex'), lower(t.fields.joinEui));
      assert.equal(p.DevEUI?.toString('hex'), lower(t.fields.devEui));
      assert.equal(p.DevNonce?.toString('hex'), u16be(t.fields.devNonce).toString('hex'));
      assert.equal(lp.verifyMIC(p, undefined, key), true);
      assert.equal(toHexUpper(lp.calculateMIC(p, undefined, key)), toHexUpper(aesCmac(key, ours.subarray(0, 19)).subarray(0, 4)));
    });
    it(`Join-request / ${t.name}: lora-packet builds the same bytes from fields`, () => {
      const p = lp.fromFields({ MType: 'Join Request', AppEUI: hex(t.fields.joinEui), DevEUI: hex(t.fields.devEui), DevNonce: u16be(t.fields.devNonce) }, undefined, undefined, hex(t.key ?? ''));
      assert.equal(toHexUpper(p.getPHYPayload() ?? Buffer.alloc(0)), toHexUpper(hex(t.phyPayload)));
    });
  }
  it('property / random Join-requests: lora-packet reads our encoding back and agrees on the MIC', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 8, maxLength: 8 }), fc.uint8Array({ minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 0xffff }), fc.uint8Array({ minLength: 16, maxLength: 16 }), (je, de, dn, key) => {
      const mi = encodeJoinRequestMicInput({ joinEui: eui64FromBeHex(toHexUpper(je)), devEui: eui64FromBeHex(toHexUpper(de)), devNonce: dn });
      const phy = Buffer.concat([mi, aesCmac(key, mi).subarray(0, 4)]);
      const p = lp.fromWire(phy);
      assert.ok(p.AppEUI?.equals(Buffer.from(je)));
      assert.ok(p.DevEUI?.equals(Buffer.from(de)));
      assert.equal(p.DevNonce?.readUInt16BE(0), dn);
      assert.equal(lp.verifyMIC(p, undefined, Buffer.from(key)), true);
    }), { numRuns: 100 });
  });
});

describe('lora-packet cross-check / Join-accept', () => {
  for (const t of join.joinAccepts.filter((x) => x.phyPayload !== null && x.encKey !== null)) {
    it(`Join-accept / ${t.name}: lora-packet decrypts our frame (AES encrypt on the device side), reads the fields and verifies the MIC [${cite(t.source)}]`, () => {
      const encKey = hex(t.encKey ?? '');
      const micKey = hex(t.micKey);
      const body = encodeJoinAcceptBody({
        joinNonce: t.fields.joinNonce, netId: netIdFromBeHex(t.fields.netId), devAddr: devAddrFromBeHex(t.fields.devAddr),
        dlSettings: hex(t.fields.dlSettings)[0] ?? 0, rxDelay: t.fields.rxDelay, cfList: t.fields.cfList === undefined ? undefined : hex(t.fields.cfList),
      });
      const micInput = t.micFormula === 'legacy'
        ? joinAcceptMicInputLegacy(body)
        : joinAcceptMicInput11({ joinReqType: t.joinReqType as JoinReqType, joinEui: eui64FromBeHex(t.joinEui), devNonce: t.devNonce ?? -1 }, body);
      const mic = aesCmac(micKey, micInput).subarray(0, 4);
      const ours = assembleJoinAccept(aes128EcbDecrypt(encKey, joinAcceptCipherInput(body, mic)));

      const plain = lp.decryptJoinAccept(lp.fromWire(ours), encKey);
      assert.equal(toHexUpper(plain), toHexUpper(Buffer.concat([body, mic])));
      const p = lp.fromWire(plain);
      assert.equal(p.getMType(), 'Join Accept');
      assert.equal(p.AppNonce?.toString('hex'), u24be(t.fields.joinNonce).toString('hex'));
      assert.equal(p.NetID?.toString('hex'), lower(t.fields.netId));
      assert.equal(p.DevAddr?.toString('hex'), lower(t.fields.devAddr));
      assert.equal(p.getDLSettingsOptNeg(), ((hex(t.fields.dlSettings)[0] ?? 0) & 0x80) !== 0);
      assert.equal(p.getRxDelayDel(), t.fields.rxDelay);
      assert.equal(p.CFList?.toString('hex') ?? '', t.fields.cfList === undefined ? '' : lower(t.fields.cfList));
      if (t.micFormula === 'legacy') {
        assert.equal(lp.verifyMIC(p, undefined, micKey), true);
      } else {
        // lora-packet picks the 1.1 formula from OptNeg (as a 1.1 device does, LoRaWAN 1.1 §6.2.3) and needs
        // JoinReqType, JoinEUI and DevNonce (or RJcount) from the caller; its fromWire presets JoinReqType 0xFF.
        p.JoinReqType = Buffer.of(t.joinReqType ?? 0xff);
        p.AppEUI = hex(t.joinEui ?? '');
        p.DevNonce = u16be(t.devNonce ?? 0);
        assert.equal(lp.verifyMIC(p, micKey, undefined), true);
      }
    });
  }
  for (const t of join.joinAccepts.filter((x) => x.phyPayload !== null && x.encKey !== null && x.micFormula === 'legacy' && x.fields.cfList === undefined)) {
    it(`Join-accept / ${t.name}: lora-packet fromFields builds the same encrypted frame`, () => {
      const p = lp.fromFields({
        MType: 'Join Accept', AppNonce: u24be(t.fields.joinNonce), NetID: hex(t.fields.netId), DevAddr: hex(t.fields.devAddr),
        DLSettings: hex(t.fields.dlSettings)[0] ?? 0, RxDelay: t.fields.rxDelay,
      }, undefined, undefined, hex(t.encKey ?? ''));
      assert.equal(toHexUpper(p.getPHYPayload() ?? Buffer.alloc(0)), toHexUpper(hex(t.phyPayload ?? '')));
    });
  }
  it('Join-accept 1.1 join B / lora-packet fromFields (MIC under JSIntKey, encryption under NwkKey) builds the same frame', () => {
    const t = join.joinAccepts.find((x) => x.name.startsWith('LoRaWAN 1.1 join B'));
    assert.ok(t && t.encKey && t.phyPayload && t.joinEui && t.devNonce !== undefined);
    const p = lp.fromFields({
      MType: 'Join Accept', AppNonce: u24be(t.fields.joinNonce), NetID: hex(t.fields.netId), DevAddr: hex(t.fields.devAddr),
      DLSettings: hex(t.fields.dlSettings)[0] ?? 0, RxDelay: t.fields.rxDelay, AppEUI: hex(t.joinEui), DevNonce: u16be(t.devNonce),
    }, undefined, hex(t.micKey), hex(t.encKey));
    assert.equal(toHexUpper(p.getPHYPayload() ?? Buffer.alloc(0)), toHexUpper(hex(t.phyPayload)));
  });
  it('lora-packet "encrypt" is AES-ECB encrypt, the device-side inverse of our accept encryption', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (key, data) => {
      const k = Buffer.from(key);
      assert.ok(lp.encrypt(aes128EcbDecrypt(k, data), k).equals(Buffer.from(data)));
      assert.ok(lp.encrypt(Buffer.from(data), k).equals(aes128EcbEncrypt(k, data)));
    }), { numRuns: 50 });
  });
});

describe('lora-packet cross-check / Rejoin-request', () => {
  for (const t of join.rejoinRequests) {
    it(`Rejoin type ${t.fields.rejoinType} / ${t.name}: lora-packet parses the header fields and verifies the MIC [${cite(t.source)}]`, () => {
      const phy = hex(t.phyPayload);
      const p = lp.fromWire(phy);
      assert.equal(p.getMType(), 'Rejoin Request');
      assert.equal(p.RejoinType?.[0], t.fields.rejoinType);
      assert.equal(p.DevEUI?.toString('hex'), lower(t.fields.devEui));
      const key = hex(t.key);
      if (t.fields.rejoinType === 1) {
        assert.equal(p.AppEUI?.toString('hex'), lower(t.fields.joinEui ?? ''));
        assert.equal(lp.verifyMIC(p, undefined, key), true);
      } else {
        assert.equal(p.NetID?.toString('hex'), lower(t.fields.netId ?? ''));
        assert.equal(p.RJCount0?.toString('hex'), u16be(t.fields.rjCount).toString('hex'));
        assert.equal(lp.verifyMIC(p, key), true);
      }
    });
  }
  it('Rejoin type 1 / lora-packet 0.9.3 reads RJcount1 from the wrong offset; we follow LoRaWAN 1.1 §6.2.4.2', () => {
    // LoRaWAN 1.1 §6.2.4.2: type-1 MACPayload = RejoinType(1) | JoinEUI(8) | DevEUI(8) | RJcount1(2), so RJcount1 is
    // PHYPayload bytes 18..19. lora-packet's REJOIN_TYPE_2 structure (used for type 1) copies the type 0/2 offset
    // {start: 13, end: 15}, which lies inside DevEUI. Its MIC check is unaffected (it MACs the raw bytes).
    const t = join.rejoinRequests.find((x) => x.fields.rejoinType === 1 && x.fields.rjCount === 219);
    assert.ok(t);
    const phy = hex(t.phyPayload);
    const ours = decodeRejoinRequest(phy);
    assert.ok(ours.rejoinType === 1);
    assert.equal(ours.rjCount1, 219);
    const theirs = lp.fromWire(phy).RJCount1;
    assert.equal(theirs?.toString('hex'), Buffer.from(phy.subarray(13, 15)).reverse().toString('hex'), 'lora-packet reads bytes 13..14 (inside DevEUI)');
    assert.notEqual(theirs?.readUInt16BE(0), 219);
  });
});

describe('lora-packet cross-check / session and lifetime keys', () => {
  for (const v of keys.vectors) {
    it(`${v.formula} keys / ${v.name}: lora-packet derives the same keys we do [${cite(v.source)}]`, () => {
      const root = hex(v.rootKey);
      const i = v.inputs;
      let theirs: Record<string, Buffer>;
      let ours: Record<string, string>;
      if (v.formula === 'legacy') {
        theirs = lp.generateSessionKeys10(root, hex(i.netId ?? ''), u24be(i.joinNonce ?? 0), u16be(i.devNonce ?? 0));
        const input = { joinNonce: i.joinNonce ?? 0, netId: netIdFromBeHex(i.netId), devNonce: i.devNonce ?? 0 };
        ours = {
          NwkSKey: toHexUpper(aes128EcbEncrypt(root, legacySessionKeyBlock('NwkSKey', input))),
          AppSKey: toHexUpper(aes128EcbEncrypt(root, legacySessionKeyBlock('AppSKey', input))),
        };
      } else if (v.formula === 'lorawan11') {
        // Same root passed as AppKey and NwkKey; each vector lists only the keys its root derives.
        theirs = lp.generateSessionKeys11(root, root, hex(i.joinEui ?? ''), u24be(i.joinNonce ?? 0), u16be(i.devNonce ?? 0));
        const input = { joinNonce: i.joinNonce ?? 0, joinEui: eui64FromBeHex(i.joinEui), devNonce: i.devNonce ?? 0 };
        ours = Object.fromEntries((['FNwkSIntKey', 'SNwkSIntKey', 'NwkSEncKey', 'AppSKey'] as const).map((k) => [k, toHexUpper(aes128EcbEncrypt(root, lorawan11SessionKeyBlock(k, input)))]));
      } else {
        theirs = lp.generateJSKeys(root, hex(i.devEui ?? ''));
        ours = Object.fromEntries((['JSIntKey', 'JSEncKey'] as const).map((k) => [k, toHexUpper(aes128EcbEncrypt(root, lifetimeKeyBlock(k, eui64FromBeHex(i.devEui))))]));
      }
      for (const [name, expected] of Object.entries(v.expected)) {
        assert.equal(toHexUpper(theirs[name] ?? Buffer.alloc(0)), expected, `lora-packet ${name}`);
        assert.equal(ours[name], expected, `ours ${name}`);
      }
    });
  }
});
