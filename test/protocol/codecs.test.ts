import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MHDR,
  ProtocolError,
  type ProtocolErrorCode,
  decodeDlSettings,
  decodeJoinAcceptPlaintext,
  decodeJoinRequest,
  decodeRejoinRequest,
  devAddrFromBeHex,
  devAddrFromLeBytes,
  devAddrToLeBytes,
  encodeDlSettings,
  encodeJoinAcceptBody,
  encodeJoinRequestMicInput,
  encodeRejoinRequestMicInput,
  eui64FromBeHex,
  joinAcceptMicInput11,
  eui64FromLeBytes,
  eui64ToLeBytes,
  netIdFromBeHex,
  netIdFromLeBytes,
  parseHex,
  protocolErrorCodes,
  toHex,
  withOptNeg,
} from '../../src/protocol/index.js';
import { hex, toHexUpper, watchInputs } from '../helpers/vectors.js';

const isCode = (code: ProtocolErrorCode, field?: string) => (e: unknown): boolean =>
  e instanceof ProtocolError && e.code === code && (field === undefined || e.field === field);

const JOIN_REQUEST = hex('00010000D07ED5B37030051C000BA3040034124F5CA349');
const REJOIN_1 = hex('C001010000D07ED5B37031051C000BA304000000B393A387');
const REJOIN_2 = hex('C0020302010807060504030201DB003C8642AE');

describe('Codecs / errors', () => {
  it('ProtocolError carries a code from the closed set, a field and a message', () => {
    const e = new ProtocolError('INVALID_LENGTH', 'x', 'PHYPayload');
    assert.equal(e.name, 'ProtocolError');
    assert.ok(e instanceof Error);
    assert.ok((protocolErrorCodes as readonly string[]).includes(e.code));
  });
});

describe('Codecs / Join-request', () => {
  it('wrong length (22 and 24 bytes) / INVALID_LENGTH on PHYPayload', () => {
    assert.throws(() => decodeJoinRequest(JOIN_REQUEST.subarray(0, 22)), isCode('INVALID_LENGTH', 'PHYPayload'));
    assert.throws(() => decodeJoinRequest(Buffer.concat([JOIN_REQUEST, Buffer.of(0)])), isCode('INVALID_LENGTH', 'PHYPayload'));
    assert.throws(() => decodeJoinRequest(Buffer.alloc(0)), isCode('INVALID_LENGTH'));
  });
  it('MType other than 000 (Join-accept, Rejoin, data up, proprietary) / INVALID_MTYPE', () => {
    for (const mhdr of [0x20, 0x40, 0x80, 0xc0, 0xe0]) {
      const f = Buffer.from(JOIN_REQUEST);
      f[0] = mhdr;
      assert.throws(() => decodeJoinRequest(f), isCode('INVALID_MTYPE', 'PHYPayload'), `MHDR ${mhdr}`);
    }
  });
  it('Major other than LoRaWAN R1 (00) / INVALID_MAJOR', () => {
    for (const major of [1, 2, 3]) {
      const f = Buffer.from(JOIN_REQUEST);
      f[0] = major;
      assert.throws(() => decodeJoinRequest(f), isCode('INVALID_MAJOR'));
    }
  });
  it('RFU bits of MHDR are ignored (LoRaWAN 1.1 §4.2)', () => {
    const f = Buffer.from(JOIN_REQUEST);
    f[0] = 0x1c;
    assert.equal(decodeJoinRequest(f).devNonce, 0x1234);
  });
  it('decoded buffers are copies: mutating the input afterwards does not change them', () => {
    const f = Buffer.from(JOIN_REQUEST);
    const d = decodeJoinRequest(f);
    f.fill(0);
    assert.equal(toHexUpper(d.mic), '4F5CA349');
    assert.equal(d.micInput[0], 0x00);
    assert.equal(d.micInput[1], 0x01);
  });
  it('encode refuses DevNonce outside 0..65535 / OUT_OF_RANGE DevNonce', () => {
    const base = { joinEui: eui64FromBeHex('70B3D57ED0000001'), devEui: eui64FromBeHex('0004A30B001C0530') };
    for (const devNonce of [-1, 65536, 1.5, Number.NaN]) {
      assert.throws(() => encodeJoinRequestMicInput({ ...base, devNonce }), isCode('OUT_OF_RANGE', 'DevNonce'));
    }
    assert.equal(encodeJoinRequestMicInput({ ...base, devNonce: 0 }).length, 19);
    assert.equal(encodeJoinRequestMicInput({ ...base, devNonce: 65535 }).readUInt16LE(17), 65535);
  });
});

describe('Codecs / Rejoin-request', () => {
  it('type 1 with 23 or 25 bytes / INVALID_LENGTH', () => {
    assert.throws(() => decodeRejoinRequest(REJOIN_1.subarray(0, 23)), isCode('INVALID_LENGTH'));
    assert.throws(() => decodeRejoinRequest(Buffer.concat([REJOIN_1, Buffer.of(0)])), isCode('INVALID_LENGTH'));
  });
  it('type 0/2 with 24 bytes (type-1 length) / INVALID_LENGTH', () => {
    const f = Buffer.from(REJOIN_1);
    f[1] = 2;
    assert.throws(() => decodeRejoinRequest(f), isCode('INVALID_LENGTH'));
    assert.throws(() => decodeRejoinRequest(REJOIN_2.subarray(0, 18)), isCode('INVALID_LENGTH'));
  });
  it('rejoin type 3..255 or missing / INVALID_REJOIN_TYPE', () => {
    for (const t of [3, 4, 0x80, 0xff]) {
      const f = Buffer.from(REJOIN_2);
      f[1] = t;
      assert.throws(() => decodeRejoinRequest(f), isCode('INVALID_REJOIN_TYPE', 'PHYPayload'), `type ${t}`);
    }
    assert.throws(() => decodeRejoinRequest(Buffer.of(0xc0)), isCode('INVALID_REJOIN_TYPE'));
  });
  it('Join-request MHDR on the rejoin decoder / INVALID_MTYPE; Major 01 / INVALID_MAJOR; empty / INVALID_MTYPE', () => {
    assert.throws(() => decodeRejoinRequest(JOIN_REQUEST), isCode('INVALID_MTYPE'));
    const f = Buffer.from(REJOIN_2);
    f[0] = 0xc1;
    assert.throws(() => decodeRejoinRequest(f), isCode('INVALID_MAJOR'));
    assert.throws(() => decodeRejoinRequest(Buffer.alloc(0)), isCode('INVALID_MTYPE'));
  });
  it('encode refuses RJcount outside 0..65535 / OUT_OF_RANGE naming RJcount0 or RJcount1', () => {
    const devEui = eui64FromBeHex('0102030405060708');
    assert.throws(() => encodeRejoinRequestMicInput({ rejoinType: 1, joinEui: devEui, devEui, rjCount1: 65536 }), isCode('OUT_OF_RANGE', 'RJcount1'));
    assert.throws(() => encodeRejoinRequestMicInput({ rejoinType: 0, netId: netIdFromBeHex('000013'), devEui, rjCount0: -1 }), isCode('OUT_OF_RANGE', 'RJcount0'));
  });
  it('MHDR is 0xC0 and the rejoin type byte follows it', () => {
    const devEui = eui64FromBeHex('0102030405060708');
    const m = encodeRejoinRequestMicInput({ rejoinType: 2, netId: netIdFromBeHex('000013'), devEui, rjCount0: 1 });
    assert.equal(m[0], MHDR.rejoinRequest);
    assert.equal(m[1], 2);
  });
});

describe('Codecs / Join-accept', () => {
  const fields = { joinNonce: 1, netId: netIdFromBeHex('000013'), devAddr: devAddrFromBeHex('26011A2B'), dlSettings: 0x03, rxDelay: 1 };
  it('plaintext of 16, 18, 32 or 34 bytes / INVALID_LENGTH', () => {
    for (const n of [16, 18, 32, 34, 0]) assert.throws(() => decodeJoinAcceptPlaintext(Buffer.alloc(n, 0x20)), isCode('INVALID_LENGTH'));
  });
  it('plaintext with a Join-request MHDR / INVALID_MTYPE; Major 10 / INVALID_MAJOR', () => {
    assert.throws(() => decodeJoinAcceptPlaintext(Buffer.alloc(17, 0)), isCode('INVALID_MTYPE'));
    const p = Buffer.alloc(17);
    p[0] = 0x22;
    assert.throws(() => decodeJoinAcceptPlaintext(p), isCode('INVALID_MAJOR'));
  });
  it('body fields out of range / OUT_OF_RANGE or INVALID_LENGTH naming the field', () => {
    assert.throws(() => encodeJoinAcceptBody({ ...fields, joinNonce: 0x1000000 }), isCode('OUT_OF_RANGE', 'JoinNonce'));
    assert.throws(() => encodeJoinAcceptBody({ ...fields, dlSettings: 256 }), isCode('OUT_OF_RANGE', 'DLSettings'));
    assert.throws(() => encodeJoinAcceptBody({ ...fields, rxDelay: 16 }), isCode('OUT_OF_RANGE', 'RxDelay'));
    assert.throws(() => encodeJoinAcceptBody({ ...fields, cfList: Buffer.alloc(15) }), isCode('INVALID_LENGTH', 'CFList'));
  });
  it('CFList is copied into the body, not referenced, and the input is unchanged', () => {
    const cfList = hex('184F84E85684B85E84886684586E8400');
    const unchanged = watchInputs(cfList);
    const body = encodeJoinAcceptBody({ ...fields, cfList });
    cfList[0] = 0;
    assert.equal(body[13], 0x18);
    cfList[0] = 0x18;
    unchanged();
  });
  it('round trip with and without CFList: encode body | MIC, decode plaintext', () => {
    for (const cfList of [undefined, hex('184F84E85684B85E84886684586E8400')]) {
      const body = encodeJoinAcceptBody({ ...fields, cfList });
      const d = decodeJoinAcceptPlaintext(Buffer.concat([body, hex('01020304')]));
      assert.equal(d.joinNonce, 1);
      assert.equal(d.netId, '000013');
      assert.equal(d.devAddr, '26011A2B');
      assert.equal(d.dlSettings, 3);
      assert.equal(d.rxDelay, 1);
      assert.equal(d.cfList === undefined ? undefined : toHexUpper(d.cfList), cfList === undefined ? undefined : toHexUpper(cfList));
    }
  });
  it('1.1 MIC input with DevNonce/RJcount outside 0..65535 / ProtocolError OUT_OF_RANGE naming DevNonce', () => {
    // STYLE rule 1: src/protocol throws ProtocolError with a code, never a bare RangeError from Buffer.
    const body = encodeJoinAcceptBody(fields);
    for (const devNonce of [65536, -1]) {
      assert.throws(
        () => joinAcceptMicInput11({ joinReqType: 0xff, joinEui: eui64FromBeHex('70B3D57ED0000001'), devNonce }, body),
        isCode('OUT_OF_RANGE', 'DevNonce'),
      );
    }
  });
  it('RxDelay RFU bits 7..4 are masked on decode', () => {
    const body = encodeJoinAcceptBody(fields);
    body[12] = 0xf3;
    assert.equal(decodeJoinAcceptPlaintext(Buffer.concat([body, Buffer.alloc(4)])).rxDelay, 3);
  });
});

describe('Codecs / DLSettings', () => {
  it('bit 7 OptNeg, bits 6..4 RX1DROffset, bits 3..0 RX2DataRate (LoRaWAN 1.1 §5.4)', () => {
    assert.deepEqual(decodeDlSettings(0x83), { optNeg: true, rx1DrOffset: 0, rx2DataRate: 3 });
    assert.deepEqual(decodeDlSettings(0x95), { optNeg: true, rx1DrOffset: 1, rx2DataRate: 5 });
    assert.deepEqual(decodeDlSettings(0x7f), { optNeg: false, rx1DrOffset: 7, rx2DataRate: 15 });
    for (let b = 0; b < 256; b++) assert.equal(encodeDlSettings(decodeDlSettings(b)), b);
  });
  it('out-of-range RX1DROffset or RX2DataRate / OUT_OF_RANGE', () => {
    assert.throws(() => encodeDlSettings({ optNeg: false, rx1DrOffset: 8, rx2DataRate: 0 }), isCode('OUT_OF_RANGE', 'DLSettings'));
    assert.throws(() => encodeDlSettings({ optNeg: false, rx1DrOffset: 0, rx2DataRate: 16 }), isCode('OUT_OF_RANGE', 'DLSettings'));
  });
  it('withOptNeg forces bit 7 and leaves the other bits alone', () => {
    assert.equal(withOptNeg(0x03, true), 0x83);
    assert.equal(withOptNeg(0x83, false), 0x03);
    assert.equal(withOptNeg(0xff, false), 0x7f);
    assert.equal(withOptNeg(0x83, true), 0x83);
  });
});

describe('Codecs / hex and identifiers', () => {
  it('parseHex accepts 0x/0X and any case (TS002-1.0 §22.3) and returns the bytes', () => {
    for (const t of ['0x0aBc', '0X0ABC', '0abc', '0ABC']) assert.equal(toHexUpper(parseHex(t, 'F')), '0ABC');
  });
  it('parseHex refuses odd length, non-hex, non-strings / INVALID_HEX naming the field', () => {
    for (const t of ['abc', 'zz', '0x0g', ' 00', '00 ', '0x 00', 12, null, undefined, {}]) {
      assert.throws(() => parseHex(t, 'DevEUI'), isCode('INVALID_HEX', 'DevEUI'), String(t));
    }
  });
  it('parseHex with a fixed length / INVALID_LENGTH', () => {
    assert.throws(() => parseHex('0011', 'NetID', 3), isCode('INVALID_LENGTH', 'NetID'));
    assert.equal(parseHex('001122', 'NetID', 3).length, 3);
  });
  it('toHex is upper case and honours a Uint8Array view offset', () => {
    const b = Buffer.from('00ABCDEF', 'hex');
    assert.equal(toHex(new Uint8Array(b.buffer, b.byteOffset + 1, 2)), 'ABCD');
  });
  it('EUI-64 / canonical form upper case; LE bytes are the reverse (LoRaWAN 1.1 §6.2.2)', () => {
    const e = eui64FromBeHex('0x70b3d57ed0000001');
    assert.equal(e, '70B3D57ED0000001');
    assert.equal(toHexUpper(eui64ToLeBytes(e)), '010000D07ED5B370');
    assert.equal(eui64FromLeBytes(eui64ToLeBytes(e)), e);
    assert.throws(() => eui64FromBeHex('70B3D57ED00000', 'JoinEUI'), isCode('INVALID_LENGTH', 'JoinEUI'));
  });
  it('NetID and DevAddr / 3 and 4 bytes, LE on air', () => {
    assert.equal(netIdFromLeBytes(Buffer.from('130000', 'hex')), '000013');
    assert.equal(toHexUpper(devAddrToLeBytes(devAddrFromBeHex('26011a2b'))), '2B1A0126');
    assert.equal(devAddrFromLeBytes(Buffer.from('2B1A0126', 'hex')), '26011A2B');
    assert.throws(() => netIdFromBeHex('0013'), isCode('INVALID_LENGTH', 'NetID'));
    assert.throws(() => devAddrFromBeHex('26011A'), isCode('INVALID_LENGTH', 'DevAddr'));
  });
});
