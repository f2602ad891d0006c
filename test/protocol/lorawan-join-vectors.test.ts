import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac } from '../../src/custody/primitives.js';
import {
  type Eui64,
  type JoinReqType,
  assembleJoinAccept,
  decodeJoinAcceptPlaintext,
  decodeJoinRequest,
  decodeRejoinRequest,
  devAddrFromBeHex,
  encodeJoinAcceptBody,
  encodeJoinRequestMicInput,
  encodeRejoinRequestMicInput,
  eui64FromBeHex,
  joinAcceptCipherInput,
  joinAcceptMicInput11,
  joinAcceptMicInputLegacy,
  lifetimeKeyBlock,
  netIdFromBeHex,
} from '../../src/protocol/index.js';
import { type VectorSource, cite, hex, loadVectors, toHexUpper, watchInputs } from '../helpers/vectors.js';

interface JoinRequestVector {
  name: string; source: VectorSource[]; key: string | null; keyRole: string | null;
  fields: { joinEui: string; devEui: string; devNonce: number }; mic: string; phyPayload: string;
}
interface RejoinVector {
  name: string; source: VectorSource[]; key: string; keyRole: string;
  fields: { rejoinType: 0 | 1 | 2; netId?: string; joinEui?: string; devEui: string; rjCount: number }; mic: string; phyPayload: string;
}
interface JoinAcceptVector {
  name: string; source: VectorSource[]; micFormula: 'legacy' | 'lorawan11'; joinReqType?: number; joinEui?: string; devNonce?: number;
  micInput?: string; micKey: string; micKeyRole: string; encKey: string | null; encKeyRole: string | null;
  fields: { joinNonce: number; netId: string; devAddr: string; dlSettings: string; rxDelay: number; cfList?: string };
  body: string; mic: string; phyPayload: string | null;
}
interface KeyFrom { derive?: 'JSIntKey' | 'JSEncKey'; nwkKey?: string; devEui?: string; key?: string }
interface RawAcceptMic {
  name: string; source: VectorSource[]; micFormula: 'legacy' | 'lorawan11'; micKey?: string; micKeyFrom?: KeyFrom;
  joinReqType?: number; joinEui?: string; devNonce?: number; body: string; mic: string;
}
interface RawAcceptEnc { name: string; source: VectorSource[]; keyFrom: KeyFrom; plaintext: string; ciphertext: string }
interface JoinFile {
  joinRequests: JoinRequestVector[];
  rawJoinRequestMics: { name: string; source: VectorSource[]; key: string; micInput: string; mic: string }[];
  rejoinRequests: RejoinVector[];
  joinAccepts: JoinAcceptVector[];
  rawJoinAcceptMics: RawAcceptMic[];
  rawJoinAcceptEncryption: RawAcceptEnc[];
}

const v = loadVectors<JoinFile>('lorawan-join');
const eui = (s: string): Eui64 => eui64FromBeHex(s);
const mic4 = (key: Uint8Array, input: Uint8Array): string => toHexUpper(aesCmac(key, input).subarray(0, 4));

function keyOf(k: KeyFrom): Buffer {
  if (k.key) return hex(k.key);
  if (!k.derive || !k.nwkKey || !k.devEui) throw new Error('vector keyFrom incomplete');
  // LoRaWAN 1.1 §6.1.1.3: JSIntKey/JSEncKey = aes128_encrypt(NwkKey, 0x06/0x05 | DevEUI | pad16)
  return aes128EcbEncrypt(hex(k.nwkKey), lifetimeKeyBlock(k.derive, eui(k.devEui)));
}

describe('LoRaWAN / Join-request known answers', () => {
  for (const t of v.joinRequests) {
    it(`Join-request / ${t.name} / decode fields and MIC [${cite(t.source)}]`, () => {
      const phy = hex(t.phyPayload);
      const unchanged = watchInputs(phy);
      const d = decodeJoinRequest(phy);
      assert.equal(d.kind, 'join-request');
      assert.equal(d.joinEui, t.fields.joinEui);
      assert.equal(d.devEui, t.fields.devEui);
      assert.equal(d.devNonce, t.fields.devNonce);
      assert.equal(toHexUpper(d.mic), t.mic);
      // The MIC covers MHDR | JoinEUI | DevEUI | DevNonce, bytes 0..18 (LoRaWAN 1.1 §6.2.2).
      assert.equal(toHexUpper(d.micInput), toHexUpper(phy.subarray(0, 19)));
      if (t.key !== null) {
        const key = hex(t.key);
        const keyUnchanged = watchInputs(key, d.micInput);
        assert.equal(mic4(key, d.micInput), t.mic);
        keyUnchanged();
      }
      unchanged();
    });
    it(`Join-request / ${t.name} / encode reproduces the frame`, () => {
      const mi = encodeJoinRequestMicInput({ joinEui: eui(t.fields.joinEui), devEui: eui(t.fields.devEui), devNonce: t.fields.devNonce });
      assert.equal(toHexUpper(Buffer.concat([mi, hex(t.mic)])), toHexUpper(hex(t.phyPayload)));
    });
  }
  for (const t of v.rawJoinRequestMics) {
    it(`Join-request MIC / ${t.name} / CMAC(key, MHDR..DevNonce)[0..3] [${cite(t.source)}]`, () => {
      assert.equal(mic4(hex(t.key), hex(t.micInput)), t.mic);
    });
  }
});

describe('LoRaWAN 1.1 / Rejoin-request known answers', () => {
  for (const t of v.rejoinRequests) {
    it(`Rejoin-request type ${t.fields.rejoinType} / ${t.name} / decode, MIC under ${t.keyRole} [${cite(t.source)}]`, () => {
      const phy = hex(t.phyPayload);
      const unchanged = watchInputs(phy);
      const d = decodeRejoinRequest(phy);
      assert.equal(d.rejoinType, t.fields.rejoinType);
      assert.equal(d.devEui, t.fields.devEui);
      if (d.rejoinType === 1) {
        assert.equal(d.joinEui, t.fields.joinEui);
        assert.equal(d.rjCount1, t.fields.rjCount);
        // Type 1: MIC over the 20 bytes MHDR..RJcount1 (LoRaWAN 1.1 §6.2.4.2).
        assert.equal(d.micInput.length, 20);
      } else {
        assert.equal(d.netId, t.fields.netId);
        assert.equal(d.rjCount0, t.fields.rjCount);
        // Types 0 and 2: MIC over the 15 bytes MHDR..RJcount0 (LoRaWAN 1.1 §6.2.4.1).
        assert.equal(d.micInput.length, 15);
      }
      assert.equal(toHexUpper(d.mic), t.mic);
      assert.equal(mic4(hex(t.key), d.micInput), t.mic);
      unchanged();
    });
    it(`Rejoin-request type ${t.fields.rejoinType} / ${t.name} / encode reproduces the frame`, () => {
      const f = t.fields;
      const mi = f.rejoinType === 1
        ? encodeRejoinRequestMicInput({ rejoinType: 1, joinEui: eui(f.joinEui ?? ''), devEui: eui(f.devEui), rjCount1: f.rjCount })
        : encodeRejoinRequestMicInput({ rejoinType: f.rejoinType, netId: netIdFromBeHex(f.netId), devEui: eui(f.devEui), rjCount0: f.rjCount });
      assert.equal(toHexUpper(Buffer.concat([mi, hex(t.mic)])), toHexUpper(hex(t.phyPayload)));
    });
  }
});

describe('LoRaWAN / Join-accept known answers', () => {
  for (const t of v.joinAccepts) {
    const formula = t.micFormula === 'legacy'
      ? 'legacy MIC over body'
      : `1.1 MIC JoinReqType ${(t.joinReqType ?? 0).toString(16).padStart(2, '0').toUpperCase()}|JoinEUI|DevNonce|body`;
    it(`Join-accept / ${t.name} / body encodes from fields [${cite(t.source)}]`, () => {
      const cfList = t.fields.cfList === undefined ? undefined : hex(t.fields.cfList);
      const unchanged = watchInputs(...(cfList ? [cfList] : []));
      const body = encodeJoinAcceptBody({
        joinNonce: t.fields.joinNonce,
        netId: netIdFromBeHex(t.fields.netId),
        devAddr: devAddrFromBeHex(t.fields.devAddr),
        dlSettings: hex(t.fields.dlSettings)[0] ?? 0,
        rxDelay: t.fields.rxDelay,
        cfList,
      });
      assert.equal(toHexUpper(body), toHexUpper(hex(t.body)));
      assert.equal(body.length, cfList ? 29 : 13);
      unchanged();
    });
    it(`Join-accept / ${t.name} / ${formula} under ${t.micKeyRole}`, () => {
      const body = hex(t.body);
      const unchanged = watchInputs(body);
      const micInput = t.micFormula === 'legacy'
        ? joinAcceptMicInputLegacy(body)
        : joinAcceptMicInput11({ joinReqType: t.joinReqType as JoinReqType, joinEui: eui(t.joinEui ?? ''), devNonce: t.devNonce ?? -1 }, body);
      if (t.micInput) assert.equal(toHexUpper(micInput), toHexUpper(hex(t.micInput)));
      assert.equal(mic4(hex(t.micKey), micInput), t.mic);
      unchanged();
    });
    if (t.phyPayload !== null && t.encKey !== null) {
      const phyHex = t.phyPayload;
      const encKey = hex(t.encKey);
      it(`Join-accept / ${t.name} / encrypted with AES-ECB decrypt under ${t.encKeyRole ?? ''} (LoRaWAN 1.1 §6.2.3)`, () => {
        const body = hex(t.body);
        const mic = hex(t.mic);
        const unchanged = watchInputs(body, mic, encKey);
        const phy = assembleJoinAccept(aes128EcbDecrypt(encKey, joinAcceptCipherInput(body, mic)));
        assert.equal(toHexUpper(phy), toHexUpper(hex(phyHex)));
        unchanged();
      });
      it(`Join-accept / ${t.name} / device side: AES-ECB encrypt recovers the plaintext and fields`, () => {
        const phy = hex(phyHex);
        const plain = Buffer.concat([phy.subarray(0, 1), aes128EcbEncrypt(encKey, phy.subarray(1))]);
        const d = decodeJoinAcceptPlaintext(plain);
        assert.equal(d.joinNonce, t.fields.joinNonce);
        assert.equal(d.netId, t.fields.netId);
        assert.equal(d.devAddr, t.fields.devAddr);
        assert.equal(d.dlSettings, hex(t.fields.dlSettings)[0]);
        assert.equal(d.rxDelay, t.fields.rxDelay);
        assert.equal(d.cfList === undefined ? undefined : toHexUpper(d.cfList), t.fields.cfList);
        assert.equal(toHexUpper(d.body), toHexUpper(hex(t.body)));
        assert.equal(toHexUpper(d.mic), t.mic);
      });
    }
  }

  for (const t of v.rawJoinAcceptMics) {
    const what = t.micFormula === 'legacy'
      ? 'legacy / MIC over the body alone'
      : `OptNeg=1 / JoinReqType ${(t.joinReqType ?? 0).toString(16).padStart(2, '0').toUpperCase()} / JSIntKey over JoinReqType|JoinEUI|DevNonce-or-RJcount|body`;
    it(`Join-accept MIC / ${what} / ${t.name} [${cite(t.source)}]`, () => {
      const key = t.micKey ? hex(t.micKey) : keyOf(t.micKeyFrom ?? {});
      const body = hex(t.body);
      const micInput = t.micFormula === 'legacy'
        ? joinAcceptMicInputLegacy(body)
        : joinAcceptMicInput11({ joinReqType: t.joinReqType as JoinReqType, joinEui: eui(t.joinEui ?? ''), devNonce: t.devNonce ?? -1 }, body);
      assert.equal(mic4(key, micInput), t.mic);
    });
  }

  for (const t of v.rawJoinAcceptEncryption) {
    it(`Join-accept encryption / ${t.name} [${cite(t.source)}]`, () => {
      const key = keyOf(t.keyFrom);
      assert.equal(toHexUpper(aes128EcbDecrypt(key, hex(t.plaintext))), t.ciphertext);
      assert.equal(toHexUpper(aes128EcbEncrypt(key, hex(t.ciphertext))), toHexUpper(hex(t.plaintext)));
    });
  }
});

describe('LoRaWAN 1.1 / Join-accept MIC input layout', () => {
  it('JoinReqType | JoinEUI (LE) | DevNonce (LE) | body, 11 bytes of prefix', () => {
    const body = hex('200100001300002B1A01268301');
    const unchanged = watchInputs(body);
    const mi = joinAcceptMicInput11({ joinReqType: 0xff, joinEui: eui('70B3D57ED0000001'), devNonce: 0x0005 }, body);
    assert.equal(toHexUpper(mi), 'FF' + '010000D07ED5B370' + '0500' + toHexUpper(body));
    unchanged();
  });
  it('RJcount occupies the DevNonce slot for every rejoin type', () => {
    const body = hex('200200001300002B1A01268301');
    for (const t of [0x00, 0x01, 0x02] as const) {
      const mi = joinAcceptMicInput11({ joinReqType: t, joinEui: eui('70B3D57ED0000001'), devNonce: 0x1234 }, body);
      assert.equal(mi[0], t);
      assert.equal(toHexUpper(mi.subarray(9, 11)), '3412');
    }
  });
  it('legacy MIC input is a copy of the body, not an alias', () => {
    const body = hex('200100001300002B1A01260301');
    const mi = joinAcceptMicInputLegacy(body);
    mi[0] = 0xff;
    assert.equal(body[0], 0x20);
  });
});
