import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ProtocolError,
  type ProtocolErrorCode,
  type RequestHeader,
  type ResultCode,
  answerHeader,
  answerTypeOf,
  asObject,
  keyEnvelopeJson,
  parseAppSKeyReq,
  parseHomeNsReq,
  parseJoinReq,
  parseKeyEnvelope,
  parseMacVersion,
  parseProtocolVersion,
  parseRequestHeader,
  parseResultCodeText,
  resultCodeText,
  resultCodes,
} from '../../src/protocol/index.js';
import { type VectorSource, cite, loadVectors, toHexUpper } from '../helpers/vectors.js';

interface Ts002File {
  macVersions: { source: VectorSource[]; accepted: { text: string; canonical: string }[]; rejected: string[]; rejectedNonStrings: unknown[] };
  protocolVersions: { source: VectorSource[]; accepted: { text: string; canonical: string }[]; rejected: string[]; rejectedNonStrings: unknown[] };
  resultCodes: {
    source: VectorSource[];
    wire: { code: ResultCode; v1_0: string; v1_1: string }[];
    incomingAliases: { text: string; code: ResultCode }[];
    unknownIncoming: string[];
  };
  joinReqs: {
    name: string; source: VectorSource[]; json: Record<string, unknown>;
    expected: {
      header: { protocolVersion: string; senderId: string; receiverId: string; transactionId: number; messageType: string };
      macVersion: string; devEui: string; devAddr: string; dlSettings: number; rxDelay: number; phyPayload: string; cfList: string | null;
    };
  }[];
  requiredJoinReqFields: string[];
}
const v = loadVectors<Ts002File>('ts002-messages');

const isCode = (code: ProtocolErrorCode, field?: string) => (e: unknown): boolean =>
  e instanceof ProtocolError && e.code === code && (field === undefined || e.field === field);

const joinReq = (): Record<string, unknown> => structuredClone(v.joinReqs[0]?.json ?? {});

describe('TS002 / MACVersion spellings', () => {
  for (const a of v.macVersions.accepted) {
    it(`MACVersion ${JSON.stringify(a.text)} / accepted as ${a.canonical} [${cite(v.macVersions.source)}]`, () => {
      assert.equal(parseMacVersion(a.text), a.canonical);
    });
  }
  for (const r of [...v.macVersions.rejected, ...v.macVersions.rejectedNonStrings]) {
    it(`MACVersion ${JSON.stringify(r)} / refused with INVALID_MAC_VERSION naming MACVersion`, () => {
      assert.throws(() => parseMacVersion(r), isCode('INVALID_MAC_VERSION', 'MACVersion'));
    });
  }
});

describe('TS002 / ProtocolVersion', () => {
  for (const a of v.protocolVersions.accepted) {
    it(`ProtocolVersion ${JSON.stringify(a.text)} / accepted [${cite(v.protocolVersions.source)}]`, () => {
      assert.equal(parseProtocolVersion(a.text), a.canonical);
    });
  }
  for (const r of [...v.protocolVersions.rejected, ...v.protocolVersions.rejectedNonStrings]) {
    it(`ProtocolVersion ${JSON.stringify(r)} / refused with INVALID_PROTOCOL_VERSION`, () => {
      assert.throws(() => parseProtocolVersion(r), isCode('INVALID_PROTOCOL_VERSION', 'ProtocolVersion'));
    });
  }
  it('ProtocolVersion absent / MISSING_FIELD naming ProtocolVersion', () => {
    assert.throws(() => parseProtocolVersion(undefined), isCode('MISSING_FIELD', 'ProtocolVersion'));
  });
});

describe('TS002 / result codes per protocol version', () => {
  it('every internal result code has a row in the vector table', () => {
    assert.deepEqual(new Set(v.resultCodes.wire.map((r) => r.code)), new Set(resultCodes));
  });
  for (const r of v.resultCodes.wire) {
    it(`ResultCode ${r.code} / 1.0 writes ${r.v1_0}, 1.1 writes ${r.v1_1} [${cite(v.resultCodes.source)}]`, () => {
      assert.equal(resultCodeText(r.code, '1.0'), r.v1_0);
      assert.equal(resultCodeText(r.code, '1.1'), r.v1_1);
    });
  }
  for (const a of v.resultCodes.incomingAliases) {
    it(`incoming ResultCode ${JSON.stringify(a.text)} / read as ${a.code}`, () => {
      assert.equal(parseResultCodeText(a.text), a.code);
    });
  }
  for (const u of v.resultCodes.unknownIncoming) {
    it(`incoming ResultCode ${JSON.stringify(u)} / unknown (undefined), matching is exact and case-sensitive`, () => {
      assert.equal(parseResultCodeText(u), undefined);
    });
  }
  it('every wire text we emit parses back to the same code, for both versions (NoAction/FrameReplayed degrade to Other in 1.0)', () => {
    for (const code of resultCodes) {
      assert.equal(parseResultCodeText(resultCodeText(code, '1.1')), code);
      const back10 = parseResultCodeText(resultCodeText(code, '1.0'));
      assert.equal(back10, code === 'NoAction' || code === 'FrameReplayed' ? 'Other' : code);
    }
  });
});

describe('TS002 / JoinReq parsing', () => {
  for (const t of v.joinReqs) {
    it(`JoinReq / ${t.name} [${cite(t.source)}]`, () => {
      const body = structuredClone(t.json);
      const o = asObject(body);
      const header = parseRequestHeader(o);
      const m = parseJoinReq(o, header);
      assert.deepEqual(body, t.json, 'parsing must not mutate the request');
      assert.equal(header.protocolVersion, t.expected.header.protocolVersion);
      assert.equal(header.senderId, t.expected.header.senderId);
      assert.equal(header.receiverId, t.expected.header.receiverId);
      assert.equal(header.transactionId, t.expected.header.transactionId);
      assert.equal(header.messageType, t.expected.header.messageType);
      assert.equal(m.macVersion, t.expected.macVersion);
      assert.equal(m.devEui, t.expected.devEui);
      assert.equal(m.devAddr, t.expected.devAddr);
      assert.equal(m.dlSettings, t.expected.dlSettings);
      assert.equal(m.rxDelay, t.expected.rxDelay);
      assert.equal(toHexUpper(m.phyPayload), t.expected.phyPayload);
      assert.equal(m.cfList === undefined ? null : toHexUpper(m.cfList), t.expected.cfList);
    });
  }
  it('hex fields with 0x prefix and mixed case are accepted', () => {
    const o = { ...joinReq(), DevEUI: '0x0004a30B001c0530', DevAddr: '0X26011a2b', DLSettings: '0x03', PHYPayload: '0x' + String(joinReq()['PHYPayload']).toLowerCase() };
    const m = parseJoinReq(o, parseRequestHeader(o));
    assert.equal(m.devEui, '0004A30B001C0530');
    assert.equal(m.devAddr, '26011A2B');
    assert.equal(m.dlSettings, 3);
    assert.equal(m.phyPayload.length, 23);
  });
  for (const field of v.requiredJoinReqFields) {
    it(`JoinReq without ${field} / MISSING_FIELD naming ${field}`, () => {
      const o = joinReq();
      delete o[field];
      assert.throws(() => parseJoinReq(o, parseRequestHeader(o)), isCode('MISSING_FIELD', field));
    });
  }
  const invalid: [string, unknown, ProtocolErrorCode][] = [
    ['DevEUI', '0004A30B001C05', 'INVALID_LENGTH'],
    ['DevEUI', 'not hex!', 'INVALID_HEX'],
    ['DevAddr', 42, 'INVALID_FIELD'],
    ['DLSettings', '0303', 'INVALID_LENGTH'],
    ['RxDelay', 16, 'INVALID_FIELD'],
    ['RxDelay', -1, 'INVALID_FIELD'],
    ['RxDelay', 1.5, 'INVALID_FIELD'],
    ['RxDelay', '1x', 'INVALID_FIELD'],
    ['CFList', '00', 'INVALID_LENGTH'],
    ['CFList', 7, 'INVALID_FIELD'],
    ['PHYPayload', 'abc', 'INVALID_HEX'],
    ['MACVersion', '1.2', 'INVALID_MAC_VERSION'],
    ['SenderID', '', 'INVALID_FIELD'],
    ['ReceiverID', '   ', 'INVALID_FIELD'],
    ['MessageType', 5, 'INVALID_FIELD'],
    ['TransactionID', -1, 'INVALID_FIELD'],
    ['TransactionID', 4294967296, 'INVALID_FIELD'],
    ['TransactionID', '12a', 'INVALID_FIELD'],
    ['SenderNSID', '0102', 'INVALID_LENGTH'],
    ['SenderToken', 12, 'INVALID_FIELD'],
  ];
  for (const [field, value, code] of invalid) {
    it(`JoinReq with ${field} = ${JSON.stringify(value)} / ${code} naming ${field}`, () => {
      const o = { ...joinReq(), [field]: value };
      assert.throws(() => parseJoinReq(o, parseRequestHeader(o)), isCode(code, field));
    });
  }
  it('RxDelay as a numeric string ("1") is read as 1 (lenient peers)', () => {
    const o = { ...joinReq(), RxDelay: '1' };
    assert.equal(parseJoinReq(o, parseRequestHeader(o)).rxDelay, 1);
  });
  it('CFList empty string is treated as absent', () => {
    const o = { ...joinReq(), CFList: '' };
    assert.equal(parseJoinReq(o, parseRequestHeader(o)).cfList, undefined);
  });
  it('a body that is not a JSON object / INVALID_FIELD', () => {
    for (const b of [null, [], 'x', 3]) assert.throws(() => asObject(b), isCode('INVALID_FIELD'));
  });
});

describe('TS002 / header', () => {
  it('TransactionID 0 is kept; absent TransactionID reads as 0 (TTS client sends 0)', () => {
    const o = { ...joinReq(), TransactionID: 0 };
    assert.equal(parseRequestHeader(o).transactionId, 0);
    const p = joinReq();
    delete p['TransactionID'];
    assert.equal(parseRequestHeader(p).transactionId, 0);
  });
  it('TransactionID 2^32-1 is the largest accepted', () => {
    assert.equal(parseRequestHeader({ ...joinReq(), TransactionID: 4294967295 }).transactionId, 4294967295);
  });
  it('SenderToken and SenderNSID are optional; SenderNSID is canonicalised', () => {
    const h = parseRequestHeader({ ...joinReq(), ProtocolVersion: '1.1', SenderToken: '0a0b', SenderNSID: '0x00000000000000aa' });
    assert.equal(h.senderToken, '0a0b');
    assert.equal(h.senderNsId, '00000000000000AA');
    const h0 = parseRequestHeader(joinReq());
    assert.equal(h0.senderToken, undefined);
    assert.equal(h0.senderNsId, undefined);
  });
  it('answerHeader (TS002-1.0 §22.1) / same version and TransactionID, SenderID = request ReceiverID, ReceiverID given, token echoed', () => {
    const req: RequestHeader = {
      protocolVersion: '1.0', senderId: '000013', receiverId: '70B3D57ED0000001', transactionId: 3735928559,
      messageType: 'JoinReq', senderToken: '0A0B',
    };
    const h = answerHeader(req, answerTypeOf.JoinReq, req.senderId);
    assert.deepEqual(h, {
      ProtocolVersion: '1.0', SenderID: '70B3D57ED0000001', ReceiverID: '000013', TransactionID: 3735928559,
      MessageType: 'JoinAns', ReceiverToken: '0A0B',
    });
  });
  it('answerHeader / 1.1 echoes SenderNSID as ReceiverNSID; 1.0 never emits it', () => {
    const req: RequestHeader = {
      protocolVersion: '1.1', senderId: '000013', receiverId: '70B3D57ED0000001', transactionId: 0,
      messageType: 'RejoinReq', senderNsId: '00000000000000AA' as RequestHeader['senderNsId'],
    };
    const h11 = answerHeader(req, answerTypeOf.RejoinReq, req.senderId);
    assert.equal(h11['ReceiverNSID'], '00000000000000AA');
    assert.equal(h11['MessageType'], 'RejoinAns');
    assert.equal(h11['TransactionID'], 0);
    assert.equal('ReceiverToken' in h11, false);
    const h10 = answerHeader({ ...req, protocolVersion: '1.0' }, 'RejoinAns', req.senderId);
    assert.equal('ReceiverNSID' in h10, false);
  });
  it('answer types pair each request (TS002-1.0 §22.2)', () => {
    assert.deepEqual({ ...answerTypeOf }, { JoinReq: 'JoinAns', RejoinReq: 'RejoinAns', AppSKeyReq: 'AppSKeyAns', HomeNSReq: 'HomeNSAns' });
  });
});

describe('TS002 / AppSKeyReq, HomeNSReq, KeyEnvelope', () => {
  const base = { ProtocolVersion: '1.0', SenderID: 'as-1', ReceiverID: '70B3D57ED0000001', TransactionID: 7 };
  it('AppSKeyReq / SessionKeyID canonicalised to upper-case hex', () => {
    const o = { ...base, MessageType: 'AppSKeyReq', DevEUI: '0004a30b001c0530', SessionKeyID: '0x01923f0a' };
    const m = parseAppSKeyReq(o, parseRequestHeader(o));
    assert.equal(m.sessionKeyId, '01923F0A');
    assert.equal(m.devEui, '0004A30B001C0530');
  });
  it('AppSKeyReq / SessionKeyID empty or over 64 bytes refused', () => {
    const o = { ...base, MessageType: 'AppSKeyReq', DevEUI: '0004A30B001C0530', SessionKeyID: '0x' };
    assert.throws(() => parseAppSKeyReq(o, parseRequestHeader(o)), isCode('INVALID_LENGTH', 'SessionKeyID'));
    const p = { ...o, SessionKeyID: '00'.repeat(65) };
    assert.throws(() => parseAppSKeyReq(p, parseRequestHeader(p)), isCode('INVALID_LENGTH', 'SessionKeyID'));
    const q: Record<string, unknown> = { ...o };
    delete q['SessionKeyID'];
    assert.throws(() => parseAppSKeyReq(q, parseRequestHeader(q)), isCode('MISSING_FIELD', 'SessionKeyID'));
  });
  it('HomeNSReq / DevEUI required', () => {
    const o = { ...base, SenderID: '000013', MessageType: 'HomeNSReq', DevEUI: '0004A30B001C0530' };
    assert.equal(parseHomeNsReq(o, parseRequestHeader(o)).devEui, '0004A30B001C0530');
    const p: Record<string, unknown> = { ...o };
    delete p['DevEUI'];
    assert.throws(() => parseHomeNsReq(p, parseRequestHeader(p)), isCode('MISSING_FIELD', 'DevEUI'));
  });
  it('KeyEnvelope / empty or absent KEKLabel means a key in clear (TS002-1.0 §21.2)', () => {
    assert.equal(parseKeyEnvelope({ KEKLabel: '', AESKey: '00112233445566778899AABBCCDDEEFF' }).kekLabel, null);
    assert.equal(parseKeyEnvelope({ AESKey: '00112233445566778899aabbccddeeff' }).kekLabel, null);
    const w = parseKeyEnvelope({ KEKLabel: 'ns-000013', AESKey: '07FEF91D10A931FFB71F6080129C4852BDD09128041FBA8B' }, 'NwkSKey');
    assert.equal(w.kekLabel, 'ns-000013');
    assert.equal(w.aesKey.length, 24);
  });
  it('KeyEnvelope / not an object, non-string label, missing AESKey / errors naming the field', () => {
    assert.throws(() => parseKeyEnvelope('x', 'AppSKey'), isCode('INVALID_FIELD', 'AppSKey'));
    assert.throws(() => parseKeyEnvelope({ KEKLabel: 1, AESKey: '00' }, 'AppSKey'), isCode('INVALID_FIELD', 'AppSKey'));
    assert.throws(() => parseKeyEnvelope({ KEKLabel: 'a' }, 'AppSKey'), isCode('MISSING_FIELD', 'AppSKey.AESKey'));
  });
  it('keyEnvelopeJson / writes "" for a clear key and upper-case hex', () => {
    assert.deepEqual(keyEnvelopeJson(null, Buffer.from('0a0b', 'hex')), { KEKLabel: '', AESKey: '0A0B' });
    assert.deepEqual(keyEnvelopeJson('as-1', Buffer.from('ff', 'hex')), { KEKLabel: 'as-1', AESKey: 'FF' });
  });
});
