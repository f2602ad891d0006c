import assert from 'node:assert/strict';
import { constants, createCipheriv, createHash, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type * as Pkcs11js from 'pkcs11js';
import {
  CustodyError,
  type CustodyErrorCode,
  type KeyCustody,
  type KeyUsage,
  type ReceivingKeyInfo,
  type SealedImport,
  SoftwareKeyCustody,
  type SealedKeyStore,
  derivationKeyHandle,
  kekHandle,
  receivingKeyHandle,
  rootKeyHandle,
} from '../../src/custody/index.js';
import { openPkcs11Custody, openPkcs11Token, pkcs11WorkersForTest } from '../../src/custody/pkcs11/index.js';
import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac, aesKeyWrap } from '../../src/custody/primitives.js';
import { eui64FromBeHex, legacySessionKeyBlock, lifetimeKeyBlock, lorawan11SessionKeyBlock, netIdFromBeHex } from '../../src/protocol/index.js';
import { type TestToken, createTestToken, softhsmModulePath, useTemporarySoftHsmConfig } from '../helpers/softhsm.js';
import { hex, loadVectors, toHexUpper } from '../helpers/vectors.js';

/*
 * PKCS#11 custody's own guarantees, checked with a PKCS#11 client of our own (pkcs11js directly, not the custody
 * code): keys on the token are sensitive and non-extractable, no session key outlives an operation (what a session
 * keeps are working copies, as protected as the token keys, gone with the session), results
 * equal the software keystore's byte for byte (spec-notes §1.12 A–E), and token problems read as clear errors.
 *
 * The inspector initialises the library first, so the custody instances join that initialisation and never
 * finalize it under the inspector (module.ts: only the initialiser finalizes).
 */

const K = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11js;

// ---------------------------------------------------------------------------------------------------------------
// An independent PKCS#11 client.

class Inspector {
  readonly p = new K.PKCS11();
  readonly session: Buffer;
  constructor(token: TestToken) {
    this.p.load(softhsmModulePath());
    // Initialises the library before the custody does: declare threads (the custody's workers call it concurrently).
    this.p.C_Initialize({ flags: K.CKF_OS_LOCKING_OK });
    const slot = this.p.C_GetSlotList(true).find((s) => this.p.C_GetTokenInfo(s).label.trimEnd() === token.label);
    assert.ok(slot, `inspector: token ${token.label} present`);
    this.session = this.p.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
    this.p.C_Login(this.session, K.CKU_USER, token.pin);
  }

  find(template: Pkcs11js.Template): Buffer[] {
    this.p.C_FindObjectsInit(this.session, template);
    try {
      return this.p.C_FindObjects(this.session, 1000);
    } finally {
      this.p.C_FindObjectsFinal(this.session);
    }
  }

  byLabel(label: string): Buffer {
    const found = this.find([{ type: K.CKA_LABEL, value: label }, { type: K.CKA_TOKEN, value: true }]);
    assert.equal(found.length, 1, `one token object labelled ${label}`);
    return found[0]!;
  }

  sessionObjects(): number {
    return this.find([{ type: K.CKA_TOKEN, value: false }]).length;
  }

  /** Session objects that could leave the token (extractable or not sensitive): session keys, never kept. */
  exportableSessionObjects(): number {
    return this.find([{ type: K.CKA_TOKEN, value: false }, { type: K.CKA_EXTRACTABLE, value: true }]).length + this.find([{ type: K.CKA_TOKEN, value: false }, { type: K.CKA_SENSITIVE, value: false }]).length;
  }

  attribute(object: Buffer, type: number): Buffer {
    return this.p.C_GetAttributeValue(this.session, object, [{ type }])[0]!.value;
  }

  close(): void {
    this.p.C_Logout(this.session);
    this.p.C_CloseSession(this.session);
    this.p.C_Finalize();
    this.p.close();
  }
}

/** The software keystore on an in-memory record store: the reference the token's results must equal. */
function softwareCustody(): KeyCustody {
  const records = new Map<string, { handle: string; usage: KeyUsage; sealed: Buffer; createdAt: Date }>();
  const store: SealedKeyStore = {
    async insertKeyRecord(r) { records.set(r.handle, r); },
    async insertKeyRecords(rs) { for (const r of rs) records.set(r.handle, r); },
    async deleteKeyRecords(hs) { return hs.filter((h) => records.delete(h)).length; },
    async getKeyRecord(h) { return records.get(h); },
    async listKeyRecords() { return [...records.values()]; },
    async deleteKeyRecord(h) { return records.delete(h); },
  };
  return new SoftwareKeyCustody(store, randomBytes(32));
}

async function rejectsWith(promise: Promise<unknown>, code: CustodyErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CustodyError, `expected a CustodyError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    if (message) assert.match(error.message, message);
    return true;
  });
}

const CLEAR = { clear: { peer: 'ns/000013', allowedBy: 'operator-peer-setting' } } as const;

// ---------------------------------------------------------------------------------------------------------------

let tokenDir: string;
let main: TestToken;
let pinToken: TestToken;
let inspector: Inspector;
let custody: KeyCustody;

before(async () => {
  tokenDir = useTemporarySoftHsmConfig();
  main = createTestToken('pkcs11');
  pinToken = createTestToken('pin');
  inspector = new Inspector(main);
  custody = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: main.label, pin: main.pin }] });
});

after(async () => {
  await custody?.close();
  inspector?.close();
  rmSync(dirname(tokenDir), { recursive: true, force: true });
});

describe('pkcs11 custody / keys on the token', () => {
  const transport = randomBytes(16);
  const cases: { how: string; handle: string; usage: KeyUsage; make: () => Promise<void> }[] = [
    { how: 'importKek (C_CreateObject)', handle: kekHandle('t-created'), usage: 'kek', make: () => custody.importKek('t-created', transport) },
    { how: 'importWrapped, 16-byte KEK (C_UnwrapKey)', handle: kekHandle('t-unwrapped-16'), usage: 'kek', make: () => custody.importWrapped(kekHandle('t-unwrapped-16'), 'kek', aesKeyWrap(transport, randomBytes(16)), 't-created') },
    { how: 'importWrapped, 32-byte KEK (C_UnwrapKey)', handle: kekHandle('t-unwrapped-32'), usage: 'kek', make: () => custody.importWrapped(kekHandle('t-unwrapped-32'), 'kek', aesKeyWrap(transport, randomBytes(32)), 't-created') },
    { how: 'importWrapped root key (C_UnwrapKey)', handle: rootKeyHandle('0004A30B001C0530', 'AppKey', 'attrs'), usage: 'root', make: () => custody.importWrapped(rootKeyHandle('0004A30B001C0530', 'AppKey', 'attrs'), 'root', aesKeyWrap(transport, randomBytes(16)), 't-created') },
  ];

  for (const c of cases) {
    it(`${c.usage} key by ${c.how}: a token object labelled with its handle, CKA_VALUE unreadable (CKR_ATTRIBUTE_SENSITIVE), sensitive, non-extractable, usage flags as specified`, async () => {
      await c.make();
      const object = inspector.byLabel(c.handle);
      assert.throws(() => inspector.attribute(object, K.CKA_VALUE), /CKR_ATTRIBUTE_SENSITIVE/);
      assert.deepEqual(inspector.attribute(object, K.CKA_SENSITIVE), Buffer.of(1));
      assert.deepEqual(inspector.attribute(object, K.CKA_EXTRACTABLE), Buffer.of(0));
      assert.deepEqual(inspector.attribute(object, K.CKA_TOKEN), Buffer.of(1));
      const id = inspector.attribute(object, K.CKA_ID);
      assert.deepEqual(id.subarray(0, 16), createHash('sha256').update(c.handle).digest().subarray(0, 16), 'CKA_ID starts with SHA-256(handle)[0..16)');
      const flags = { SIGN: K.CKA_SIGN, ENCRYPT: K.CKA_ENCRYPT, DECRYPT: K.CKA_DECRYPT, DERIVE: K.CKA_DERIVE, WRAP: K.CKA_WRAP, UNWRAP: K.CKA_UNWRAP, VERIFY: K.CKA_VERIFY };
      const expected = c.usage === 'root'
        ? { SIGN: 1, ENCRYPT: 1, DECRYPT: 1, DERIVE: 1, WRAP: 0, UNWRAP: 0, VERIFY: 0 }
        : { SIGN: 0, ENCRYPT: 0, DECRYPT: 0, DERIVE: 0, WRAP: 1, UNWRAP: 1, VERIFY: 0 };
      for (const [name, type] of Object.entries(flags)) {
        assert.deepEqual(inspector.attribute(object, type), Buffer.of(expected[name as keyof typeof expected]), `CKA_${name}`);
      }
      const listed = (await custody.listKeys()).find((k) => k.handle === c.handle);
      assert.equal(listed?.usage, c.usage);
      assert.ok(Math.abs(listed.createdAt.getTime() - Date.now()) < 60_000, 'createdAt is the import time');
    });
  }
});

describe('pkcs11 custody / no session key outlives an operation', () => {
  it('after MICs, encryptions and exports, including failing ones mid-batch, the only session objects left are working copies (sensitive, non-extractable), none once the custody is closed', async () => {
    const custody = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: main.label, pin: main.pin }] });
    try {
      // Positive control: the inspector does see session objects of another session of this process.
      const other = inspector.p.C_OpenSession(inspector.p.C_GetSessionInfo(inspector.session).slotID, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
      const probe = inspector.p.C_CreateObject(other, [
        { type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_KEY_TYPE, value: K.CKK_AES }, { type: K.CKA_TOKEN, value: false }, { type: K.CKA_VALUE, value: randomBytes(16) },
      ]);
      assert.equal(inspector.sessionObjects(), 1, 'a session object of another session is visible');
      inspector.p.C_DestroyObject(other, probe);
      inspector.p.C_CloseSession(other);

      const kek = randomBytes(16);
      await custody.importKek('batch', kek);
      const root = rootKeyHandle('0004A30B001C0531', 'NwkKey', 'batch');
      await custody.importWrapped(root, 'root', aesKeyWrap(kek, randomBytes(16)), 'batch');
      const derive = lifetimeKeyBlock('JSIntKey', eui64FromBeHex('0004A30B001C0531'));
      const block = Buffer.alloc(16, 7);
      for (let i = 0; i < 20; i++) {
        await custody.verifyMic({ handle: root }, randomBytes(19), randomBytes(4));
        await custody.computeMic({ handle: root, derive }, randomBytes(24));
        await custody.encryptJoinAccept({ handle: root, derive }, randomBytes(32));
        await custody.deriveAndExport(root, [{ block, to: { kekLabel: 'batch' } }, { block, to: CLEAR }]);
      }
      // Failures: an unknown KEK after a good destination, a short block after a good one (the first is already
      // derived and wrapped when the second fails), a KEK used as a root key, a bad envelope, a taken handle.
      await rejectsWith(custody.deriveAndExport(root, [{ block, to: { kekLabel: 'batch' } }, { block, to: { kekLabel: 'nobody' } }]), 'KEK_NOT_FOUND');
      await rejectsWith(custody.deriveAndExport(root, [{ block, to: { kekLabel: 'batch' } }, { block: Buffer.alloc(15), to: { kekLabel: 'batch' } }]), 'INVALID_KEY');
      await rejectsWith(custody.computeMic({ handle: root, derive: Buffer.alloc(17) }, Buffer.alloc(4)), 'INVALID_KEY');
      await rejectsWith(custody.computeMic({ handle: kekHandle('batch') }, Buffer.alloc(4)), 'KEY_NOT_FOUND', /is a kek key, not a root key/);
      await rejectsWith(custody.importWrapped('root/bad', 'root', aesKeyWrap(randomBytes(16), randomBytes(16)), 'batch'), 'UNWRAP_FAILED');
      await rejectsWith(custody.importWrapped('root/long', 'root', aesKeyWrap(kek, randomBytes(24)), 'batch'), 'INVALID_KEY');
      await rejectsWith(custody.importWrapped(root, 'root', aesKeyWrap(kek, randomBytes(16)), 'batch'), 'KEY_EXISTS');
      await custody.completeJoin({ micKey: { handle: root, derive }, micInput: randomBytes(40), encryptionKey: { handle: root }, body: randomBytes(13) }, [{ root, block, to: { kekLabel: 'batch' } }, { root, block, to: CLEAR }]);
      await rejectsWith(custody.completeJoin({ micKey: { handle: root, derive }, micInput: randomBytes(40), encryptionKey: { handle: root }, body: randomBytes(13) }, [{ root, block, to: { kekLabel: 'batch' } }, { root, block, to: { kekLabel: 'nobody' } }]), 'KEK_NOT_FOUND');
      assert.equal(inspector.exportableSessionObjects(), 0, 'no session key (extractable or clear) is left');
      // Per worker (2) at most: a copy of the root key, of the KEK, and the lifetime key derived with `derive`.
      const left = inspector.find([{ type: K.CKA_TOKEN, value: false }]);
      assert.ok(left.length > 0 && left.length <= 6, `working copies left: ${left.length}`);
      for (const object of left) {
        assert.deepEqual(inspector.attribute(object, K.CKA_SENSITIVE), Buffer.of(1));
        assert.deepEqual(inspector.attribute(object, K.CKA_EXTRACTABLE), Buffer.of(0));
        assert.throws(() => inspector.attribute(object, K.CKA_VALUE), /CKR_ATTRIBUTE_SENSITIVE/);
      }
    } finally {
      await custody.close();
    }
    assert.equal(inspector.sessionObjects(), 0);
    assert.equal(inspector.find([{ type: K.CKA_LABEL, value: 'root/bad' }]).length + inspector.find([{ type: K.CKA_LABEL, value: 'root/long' }]).length, 0, 'refused imports created nothing');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Byte-identical to the software keystore on the spec-notes §1.12 vectors.

interface Source { section?: string }
interface JoinRequestVector { name: string; source: Source[]; key: string; mic: string; phyPayload: string }
interface JoinAcceptVector {
  name: string; source: Source[]; micKey: string; encKey: string; body: string; micInput?: string; mic: string; phyPayload: string;
  micFormula?: string; joinReqType?: number; joinEui?: string; devNonce?: number;
}

/** LoRaWAN 1.1 §6.2.3 (spec-notes §1.5): JoinReqType | JoinEUI (LE) | DevNonce or RJcount (LE) | MHDR … CFList. */
function joinAcceptMicInput(v: JoinAcceptVector): Buffer {
  if (v.micInput) return hex(v.micInput);
  const body = hex(v.body);
  if (v.micFormula !== 'lorawan11') return body;
  const head = Buffer.alloc(11);
  head[0] = v.joinReqType ?? 0xff;
  hex(v.joinEui ?? '').reverse().copy(head, 1);
  head.writeUInt16LE(v.devNonce ?? 0, 9);
  return Buffer.concat([head, body]);
}
interface DerivationVector { name: string; source: Source[]; formula: 'legacy' | 'lorawan11' | 'lifetime'; rootKey: string; inputs: Record<string, string | number>; expected: Record<string, string> }
interface WrapVector { name: string; kek: string; keyData: string; ciphertext: string }

const fromSection112 = (v: { source: Source[] }): boolean => v.source.some((s) => s.section?.startsWith('§1.12') === true);
const joins = loadVectors<{ joinRequests: JoinRequestVector[]; joinAccepts: JoinAcceptVector[] }>('lorawan-join');
const derivations = loadVectors<{ vectors: DerivationVector[] }>('key-derivation').vectors.filter(fromSection112);
const wraps = loadVectors<{ vectors: WrapVector[] }>('keywrap-rfc3394').vectors.filter((v) => v.keyData.length === 32);

function derivationBlock(v: DerivationVector, key: string): Buffer {
  const i = v.inputs;
  if (v.formula === 'lifetime') return lifetimeKeyBlock(key as 'JSIntKey' | 'JSEncKey', eui64FromBeHex(String(i['devEui'])));
  if (v.formula === 'legacy') {
    return legacySessionKeyBlock(key as 'NwkSKey' | 'AppSKey', { joinNonce: Number(i['joinNonce']), netId: netIdFromBeHex(String(i['netId'])), devNonce: Number(i['devNonce']) });
  }
  return lorawan11SessionKeyBlock(key as 'FNwkSIntKey' | 'SNwkSIntKey' | 'NwkSEncKey' | 'AppSKey', {
    joinNonce: Number(i['joinNonce']),
    joinEui: eui64FromBeHex(String(i['joinEui'])),
    devNonce: Number(i['devNonce']),
  });
}

describe('pkcs11 custody / byte-identical to the software keystore [spec-notes §1.12 A–E]', () => {
  let software: KeyCustody;
  const transport = randomBytes(16);
  let n = 0;
  /** Imports the same root key into both custodies under a fresh handle. */
  async function rootInBoth(key: Buffer): Promise<string> {
    const handle = `root/vector/${n++}`;
    for (const c of [custody, software]) {
      if (!(await c.hasKek('vectors'))) await c.importKek('vectors', transport);
      await c.importWrapped(handle, 'root', aesKeyWrap(transport, key), 'vectors');
    }
    return handle;
  }

  before(() => {
    software = softwareCustody();
  });
  after(async () => {
    await software.close();
  });

  it('vectors are present (A–D joins, A–D derivations, E wraps)', () => {
    assert.ok(joins.joinRequests.filter(fromSection112).length >= 2);
    assert.ok(joins.joinAccepts.filter(fromSection112).length >= 5);
    assert.ok(derivations.length >= 7);
    assert.ok(wraps.length >= 6);
  });

  for (const v of joins.joinRequests.filter(fromSection112)) {
    it(`Join-request MIC ${v.mic}: ${v.name}`, async () => {
      const handle = await rootInBoth(hex(v.key));
      const phy = hex(v.phyPayload);
      const input = phy.subarray(0, phy.length - 4);
      for (const c of [custody, software]) {
        assert.equal(toHexUpper(await c.computeMic({ handle }, input)), v.mic, c.kind);
        assert.equal(await c.verifyMic({ handle }, input, hex(v.mic)), true, c.kind);
      }
    });
  }

  for (const v of joins.joinAccepts.filter(fromSection112)) {
    it(`Join-accept ${v.phyPayload}: ${v.name}`, async () => {
      const micHandle = await rootInBoth(hex(v.micKey));
      const encHandle = await rootInBoth(hex(v.encKey));
      const body = hex(v.body);
      const micInput = joinAcceptMicInput(v);
      const results: string[] = [];
      for (const c of [custody, software]) {
        const mic = await c.computeMic({ handle: micHandle }, micInput);
        const cipher = await c.encryptJoinAccept({ handle: encHandle }, Buffer.concat([body.subarray(1), mic]));
        results.push(`${toHexUpper(mic)} ${toHexUpper(Buffer.concat([body.subarray(0, 1), cipher]))}`);
      }
      assert.equal(results[0], `${v.mic} ${v.phyPayload.replace(/\s+/g, '').toUpperCase()}`);
      assert.equal(results[0], results[1]);
    });
  }

  for (const v of derivations) {
    it(`derivations in clear and wrapped: ${v.name}`, async () => {
      const handle = await rootInBoth(hex(v.rootKey));
      const kek = hex('000102030405060708090A0B0C0D0E0F');
      for (const c of [custody, software]) if (!(await c.hasKek('derive-kek'))) await c.importKek('derive-kek', kek);
      for (const [name, expected] of Object.entries(v.expected)) {
        const block = derivationBlock(v, name);
        const out: string[] = [];
        for (const c of [custody, software]) {
          const [clear, wrapped] = await c.deriveAndExport(handle, [{ block, to: CLEAR }, { block, to: { kekLabel: 'derive-kek' } }]);
          out.push(`${toHexUpper(clear!.key)} ${toHexUpper(wrapped!.key)}`);
        }
        assert.equal(out[0], `${expected} ${toHexUpper(aesKeyWrap(kek, hex(expected)))}`, name);
        assert.equal(out[0], out[1], name);
      }
    });
  }

  for (const v of wraps) {
    it(`RFC 3394 wrap ${v.ciphertext} under a ${v.kek.length * 4}-bit KEK: ${v.name}`, async () => {
      // A root key R and the block AES-ECB-decrypt(R, keyData) derive exactly keyData, which is then wrapped.
      const r = randomBytes(16);
      const handle = await rootInBoth(r);
      const label = `e-${n++}`;
      const block = aes128EcbDecrypt(r, hex(v.keyData));
      const out: string[] = [];
      for (const c of [custody, software]) {
        await c.importKek(label, hex(v.kek));
        const [w] = await c.deriveAndExport(handle, [{ block, to: { kekLabel: label } }]);
        out.push(toHexUpper(w!.key));
      }
      assert.equal(out[0], v.ciphertext);
      assert.equal(out[0], out[1]);
    });
  }

  it('timings on SoftHSM2 (diagnostic only)', async (t) => {
    const kek = randomBytes(16);
    await custody.importKek('timing', kek);
    const root = 'root/timing';
    await custody.importWrapped(root, 'root', aesKeyWrap(kek, randomBytes(16)), 'timing');
    const derive = Buffer.alloc(16, 6);
    const rounds = 500;
    const time = async (what: string, op: () => Promise<unknown>): Promise<void> => {
      for (let i = 0; i < 20; i++) await op();
      const start = process.hrtime.bigint();
      for (let i = 0; i < rounds; i++) await op();
      t.diagnostic(`${what}: ${(Number(process.hrtime.bigint() - start) / rounds / 1000).toFixed(1)} µs`);
    };
    const msg = randomBytes(19);
    const mic = randomBytes(4);
    await time('verifyMic (root key)', () => custody.verifyMic({ handle: root }, msg, mic));
    await time('computeMic (derived JSIntKey-style key)', () => custody.computeMic({ handle: root, derive }, msg));
    await time('encryptJoinAccept 32 B (root key)', () => custody.encryptJoinAccept({ handle: root }, randomBytes(32)));
    await time('deriveAndExport, 1 key wrapped', () => custody.deriveAndExport(root, [{ block: derive, to: { kekLabel: 'timing' } }]));
    await time('deriveAndExport, 2 keys wrapped', () => custody.deriveAndExport(root, [{ block: derive, to: { kekLabel: 'timing' } }, { block: msg.subarray(0, 16), to: { kekLabel: 'timing' } }]));
    await time('completeJoin, 1.1 (JSIntKey MIC, 4 keys wrapped)', () =>
      custody.completeJoin({ micKey: { handle: root, derive }, micInput: randomBytes(40), encryptionKey: { handle: root }, body: randomBytes(13) }, [0, 1, 2, 3].map((i) => ({ root, block: Buffer.alloc(16, i), to: { kekLabel: 'timing' } }))),
    );
    assert.equal(inspector.exportableSessionObjects(), 0);
  });
});

describe('pkcs11 custody / HSM counters', () => {
  it('a warm 1.1 completeJoin with 4 session keys: 4 derived objects created and destroyed, JSIntKey not derived again, one C_Sign, one C_Decrypt', async () => {
    const kek = randomBytes(16);
    await custody.importKek('counted', kek);
    const root = rootKeyHandle('0004A30B001C0532', 'NwkKey', 'counted');
    await custody.importWrapped(root, 'root', aesKeyWrap(kek, randomBytes(16)), 'counted');
    const derive = lifetimeKeyBlock('JSIntKey', eui64FromBeHex('0004A30B001C0532'));
    const join = () => custody.completeJoin({ micKey: { handle: root, derive }, micInput: randomBytes(40), encryptionKey: { handle: root }, body: randomBytes(13) }, [0, 1, 2, 3].map((i) => ({ root, block: Buffer.alloc(16, i), to: { kekLabel: 'counted' } })));
    // Warm every worker: concurrent calls keep both busy, so each makes its working copies and lifetime key.
    await Promise.all(Array.from({ length: 16 }, join));
    const before = custody.hsmCounters!();
    await join();
    const after = custody.hsmCounters!();
    const delta = (f: string): number => (after.calls[f] ?? 0) - (before.calls[f] ?? 0);
    assert.equal(delta('C_DeriveKey'), 4);
    assert.equal(delta('C_WrapKey'), 4);
    assert.equal(delta('C_DestroyObject'), 4);
    assert.equal(delta('C_Sign'), 1);
    assert.equal(delta('C_Decrypt'), 1);
    assert.equal(delta('C_CopyObject'), 0);
    assert.equal(after.sessionObjectsCreated - before.sessionObjectsCreated, 4);
    assert.equal(after.objectsDestroyed - before.objectsDestroyed, 4);
    assert.equal(after.tokenObjectsCreated - before.tokenObjectsCreated, 0);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('pkcs11 custody / opening', () => {
  it('a wrong PIN is refused with TOKEN_UNAVAILABLE naming the token, not the PIN', async () => {
    const wrong = `${pinToken.pin}x`;
    await rejectsWith(openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: pinToken.label, pin: wrong }] }), 'TOKEN_UNAVAILABLE', new RegExp(`PIN for token "${pinToken.label}" is refused`));
    await assert.rejects(openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: pinToken.label, pin: wrong }] }), (e: unknown) => e instanceof CustodyError && !e.message.includes(wrong));
  });

  it('the right PIN opens it; a second instance with another PIN is refused; both instances share one login', async () => {
    const first = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: pinToken.label, pin: pinToken.pin }] });
    const second = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: pinToken.label, pin: pinToken.pin }] });
    try {
      await rejectsWith(openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: pinToken.label, pin: 'not-the-pin' }] }), 'TOKEN_UNAVAILABLE');
      await first.importKek('shared', randomBytes(16));
      await first.close();
      // The other instance still works after the first has closed.
      assert.equal(await second.hasKek('shared'), true);
      await second.deleteKey(kekHandle('shared'));
    } finally {
      await first.close();
      await second.close();
    }
    await rejectsWith(second.hasKek('shared'), 'TOKEN_UNAVAILABLE');
  });

  it('an unknown token label is refused with TOKEN_UNAVAILABLE naming the label', async () => {
    await rejectsWith(openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: 'no-such-token', pin: '1234' }] }), 'TOKEN_UNAVAILABLE', /no PKCS#11 token labelled "no-such-token"/);
  });

  it('a module that cannot be loaded is refused with TOKEN_UNAVAILABLE naming the path', async () => {
    await rejectsWith(openPkcs11Custody({ modulePath: '/nonexistent/libpkcs11.so', tokens: [{ label: main.label, pin: main.pin }] }), 'TOKEN_UNAVAILABLE', /\/nonexistent\/libpkcs11\.so/);
  });

  it('deleteKey destroys the token object and a cached handle is not used afterwards', async () => {
    const kek = randomBytes(16);
    await custody.importKek('del', kek);
    await custody.importWrapped('root/del', 'root', aesKeyWrap(kek, randomBytes(16)), 'del');
    await custody.computeMic({ handle: 'root/del' }, Buffer.alloc(4));
    await custody.deleteKey('root/del');
    assert.equal(inspector.find([{ type: K.CKA_LABEL, value: 'root/del' }]).length, 0);
    await rejectsWith(custody.computeMic({ handle: 'root/del' }, Buffer.alloc(4)), 'KEY_NOT_FOUND');
  });

  it('a key destroyed behind the custody\'s back (stale cached object handle) is re-found, not misused, once its working copy is renewed (here at every use)', async () => {
    const custody = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: main.label, pin: main.pin }] }, { workingCopyTtlMs: 0 });
    try {
      const kek = randomBytes(16);
      await custody.importKek('stale', kek);
      const key = randomBytes(16);
      await custody.importWrapped('root/stale', 'root', aesKeyWrap(kek, key), 'stale');
      const before = await custody.computeMic({ handle: 'root/stale' }, Buffer.alloc(4)); // cached now
      inspector.p.C_DestroyObject(inspector.session, inspector.byLabel('root/stale'));
      await rejectsWith(custody.computeMic({ handle: 'root/stale' }, Buffer.alloc(4)), 'KEY_NOT_FOUND');
      await custody.importWrapped('root/stale', 'root', aesKeyWrap(kek, key), 'stale');
      assert.deepEqual(await custody.computeMic({ handle: 'root/stale' }, Buffer.alloc(4)), before);
    } finally {
      await custody.close();
    }
  });
});


// ---------------------------------------------------------------------------------------------------------------
// Receiving key and sealed batches on the token (docs/security.md, "Receiving key and sealed batches").

/** A batch sealed to `receiving` with node:crypto: RSA-OAEP (SHA-1 unless asked) and id-aes256-wrap. */
function sealed(receiving: ReceivingKeyInfo, keys: readonly { handle: string; usage: 'root' | 'derivation'; key: Buffer }[], oaep: 'sha1' | 'sha256' = 'sha1'): SealedImport {
  const batchKey = randomBytes(32);
  const wrap = (key: Buffer): Buffer => {
    const c = createCipheriv('id-aes256-wrap', batchKey, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
    return Buffer.concat([c.update(key), c.final()]);
  };
  const encrypted = publicEncrypt({ key: createPublicKey({ key: { ...receiving.jwk }, format: 'jwk' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: oaep }, batchKey);
  return { receivingKid: receiving.kid, batchKey: { oaep, encrypted }, keys: keys.map((k) => ({ handle: k.handle, usage: k.usage, wrapped: wrap(k.key) })) };
}

function batchOf(tag: string, count: number): { handle: string; usage: 'root'; key: Buffer }[] {
  return Array.from({ length: count }, (_, i) => ({ handle: rootKeyHandle(`70B3D57E${i.toString(16).padStart(8, '0').toUpperCase()}`, 'AppKey', tag), usage: 'root' as const, key: randomBytes(16) }));
}

describe('pkcs11 custody / receiving key and sealed batches on the token', () => {
  let receiving: ReceivingKeyInfo;
  before(async () => {
    receiving = await custody.createReceivingKey();
  });

  const labelled = (label: string, cls: number): Buffer[] => inspector.find([{ type: K.CKA_LABEL, value: label }, { type: K.CKA_TOKEN, value: true }, { type: K.CKA_CLASS, value: cls }]);

  it('the receiving key: a private token object (RSA, 3072 bits, e = 65537), CKA_SENSITIVE, never extractable, UNWRAP only; its private parts unreadable; its public key beside it matches the JWK', async () => {
    const handle = receivingKeyHandle(receiving.kid);
    const [priv, ...morePriv] = labelled(handle, K.CKO_PRIVATE_KEY);
    assert.ok(priv && morePriv.length === 0, 'one private key labelled with the handle');
    const flags: [string, number, number][] = [
      ['CKA_TOKEN', K.CKA_TOKEN, 1], ['CKA_PRIVATE', K.CKA_PRIVATE, 1], ['CKA_SENSITIVE', K.CKA_SENSITIVE, 1], ['CKA_EXTRACTABLE', K.CKA_EXTRACTABLE, 0],
      ['CKA_ALWAYS_SENSITIVE', K.CKA_ALWAYS_SENSITIVE, 1], ['CKA_NEVER_EXTRACTABLE', K.CKA_NEVER_EXTRACTABLE, 1],
      ['CKA_UNWRAP', K.CKA_UNWRAP, 1], ['CKA_DECRYPT', K.CKA_DECRYPT, 0], ['CKA_SIGN', K.CKA_SIGN, 0], ['CKA_DERIVE', K.CKA_DERIVE, 0],
    ];
    for (const [name, type, value] of flags) assert.deepEqual(inspector.attribute(priv, type), Buffer.of(value), name);
    for (const name of ['CKA_PRIVATE_EXPONENT', 'CKA_PRIME_1', 'CKA_PRIME_2', 'CKA_EXPONENT_1', 'CKA_EXPONENT_2', 'CKA_COEFFICIENT', 'CKA_VALUE'] as const) {
      assert.throws(() => inspector.attribute(priv, K[name]), /CKR_ATTRIBUTE_SENSITIVE|CKR_ATTRIBUTE_TYPE_INVALID/, `${name} is not readable`);
    }
    assert.throws(() => inspector.attribute(priv, K.CKA_PRIVATE_EXPONENT), /CKR_ATTRIBUTE_SENSITIVE/);
    const [pub, ...morePub] = labelled(handle, K.CKO_PUBLIC_KEY);
    assert.ok(pub && morePub.length === 0, 'one public key labelled with the handle');
    assert.equal(inspector.attribute(pub, K.CKA_MODULUS).toString('base64url'), receiving.jwk.n);
    assert.equal(inspector.attribute(pub, K.CKA_MODULUS).length, 384);
    assert.equal(inspector.attribute(priv, K.CKA_MODULUS).toString('base64url'), receiving.jwk.n);
    const id = inspector.attribute(priv, K.CKA_ID);
    assert.deepEqual(id.subarray(0, 16), createHash('sha256').update(handle).digest().subarray(0, 16));
    assert.deepEqual(inspector.attribute(pub, K.CKA_ID), id, 'the pair shares its CKA_ID');
    const listed = (await custody.listKeys()).find((k) => k.handle === handle);
    assert.equal(listed?.usage, 'receiving');
    assert.equal(listed.attributes?.['CKA_SENSITIVE'], true);
    assert.equal(listed.attributes?.['CKA_EXTRACTABLE'], false);
    assert.equal(listed.attributes?.['CKA_UNWRAP'], true);
    assert.equal(listed.attributes?.['CKA_DECRYPT'], false);
    assert.equal(listed.attributes?.['CKA_NEVER_EXTRACTABLE'], true);
  });

  it('sealed root keys and a derivation master are token objects with the attributes importWrapped gives (master: DERIVE only), their values unreadable', async () => {
    const keys = batchOf('attrs-sealed', 2);
    const master = { handle: derivationKeyHandle('attrs-vendor'), usage: 'derivation' as const, key: randomBytes(16) };
    await custody.importSealed(sealed(receiving, [...keys, master]));
    const expected: Record<string, Record<string, number>> = {
      root: { SIGN: 1, ENCRYPT: 1, DECRYPT: 1, DERIVE: 1, WRAP: 0, UNWRAP: 0, VERIFY: 0 },
      derivation: { SIGN: 0, ENCRYPT: 0, DECRYPT: 0, DERIVE: 1, WRAP: 0, UNWRAP: 0, VERIFY: 0 },
    };
    for (const k of [...keys, master]) {
      const object = inspector.byLabel(k.handle);
      assert.throws(() => inspector.attribute(object, K.CKA_VALUE), /CKR_ATTRIBUTE_SENSITIVE/);
      assert.deepEqual(inspector.attribute(object, K.CKA_SENSITIVE), Buffer.of(1));
      assert.deepEqual(inspector.attribute(object, K.CKA_EXTRACTABLE), Buffer.of(0));
      assert.deepEqual(inspector.attribute(object, K.CKA_PRIVATE), Buffer.of(1));
      for (const [name, value] of Object.entries(expected[k.usage]!)) assert.deepEqual(inspector.attribute(object, K[`CKA_${name}` as 'CKA_SIGN']), Buffer.of(value), `${k.handle} CKA_${name}`);
    }
    assert.equal((await custody.listKeys()).find((k) => k.handle === master.handle)?.usage, 'derivation');
  });

  it('importDerived: the key SoftHSM2 derives (C_DeriveKey, CKM_AES_CBC_ENCRYPT_DATA, zero IV) is AES-128-ECB(master, block): a full 16-byte CMAC the token computes with it, asked by our own client, equals node:crypto\'s with the expected key; the key stays unreadable', async () => {
    const master = randomBytes(16);
    const masterHandle = derivationKeyHandle('cmac-vendor');
    await custody.importSealed(sealed(receiving, [{ handle: masterHandle, usage: 'derivation', key: master }]));
    const devEui = '70B3D57ED0001234';
    const block = Buffer.concat([Buffer.of(0x01), Buffer.from(devEui, 'hex'), Buffer.from('JK-KDF1', 'ascii')]);
    const handle = rootKeyHandle(devEui, 'AppKey', 'kdf');
    await custody.importDerived({ master: masterHandle, keys: [{ handle, block }] });
    const expectedKey = aes128EcbEncrypt(master, block);
    const object = inspector.byLabel(handle);
    assert.throws(() => inspector.attribute(object, K.CKA_VALUE), /CKR_ATTRIBUTE_SENSITIVE/);
    assert.deepEqual(inspector.attribute(object, K.CKA_EXTRACTABLE), Buffer.of(0));
    assert.deepEqual(inspector.attribute(object, K.CKA_SENSITIVE), Buffer.of(1));
    for (const message of [randomBytes(1), randomBytes(16), randomBytes(37)]) {
      inspector.p.C_SignInit(inspector.session, { mechanism: K.CKM_AES_CMAC }, object);
      const tag = inspector.p.C_Sign(inspector.session, message, Buffer.alloc(16));
      assert.deepEqual(Buffer.from(tag), aesCmac(expectedKey, message));
    }
  });

  it('RSA-OAEP-256 (SHA-256) is refused on SoftHSM2 2.6.1 with MECHANISM_UNSUPPORTED naming RSA-OAEP (SHA-1); nothing is created', async () => {
    const keys = batchOf('oaep-256', 2);
    await rejectsWith(custody.importSealed(sealed(receiving, keys, 'sha256')), 'MECHANISM_UNSUPPORTED', /"RSA-OAEP" \(SHA-1\)/);
    for (const k of keys) assert.equal(inspector.find([{ type: K.CKA_LABEL, value: k.handle }]).length, 0);
  });

  it('exportSealed is refused (EXPORT_REFUSED): root keys on the token are not extractable', async () => {
    const [k] = batchOf('export', 1);
    await custody.importSealed(sealed(receiving, [k!]));
    await rejectsWith(custody.exportSealed(receiving.jwk, 'sha1', [k!.handle]), 'EXPORT_REFUSED', /CKA_EXTRACTABLE=false.*trusted-KEK mode.*trusted wrapping/);
  });

  it('works in chunks (one RSA unwrap per chunk, not per key), checking every envelope before creating any token object; no batch key or other exportable session object is left, none at all once closed', async () => {
    const before = new Set(inspector.find([{ type: K.CKA_TOKEN, value: false }]).map((o) => o.toString('hex')));
    const chunked = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: main.label, pin: main.pin }] }, { importChunkSize: 4 });
    try {
      const good = batchOf('chunks-good', 20);
      const c0 = chunked.hsmCounters!();
      await chunked.importSealed(sealed(receiving, good));
      const c1 = chunked.hsmCounters!();
      assert.equal((c1.calls['C_UnwrapKey'] ?? 0) - (c0.calls['C_UnwrapKey'] ?? 0), 2 * (20 + 5), 'checked, then imported: 20 keys and 5 batch keys (one per chunk of 4) each time');
      assert.equal(c1.tokenObjectsCreated - c0.tokenObjectsCreated, 20);
      for (const k of good.slice(0, 3)) assert.deepEqual(await chunked.computeMic({ handle: k.handle }, Buffer.alloc(7)), aesCmac(k.key, Buffer.alloc(7)).subarray(0, 4));

      const bad = batchOf('chunks-bad', 20);
      const input = sealed(receiving, bad);
      const wrapped = Buffer.from(input.keys[17]!.wrapped);
      wrapped[5] = (wrapped[5] ?? 0) ^ 0x01;
      const keys = input.keys.map((k, i) => (i === 17 ? { ...k, wrapped } : k));
      const c2 = chunked.hsmCounters!();
      await rejectsWith(chunked.importSealed({ ...input, keys }), 'UNWRAP_FAILED', /root\/70B3D57E00000011\/AppKey\/chunks-bad/);
      assert.equal(chunked.hsmCounters!().tokenObjectsCreated - c2.tokenObjectsCreated, 0, 'the bad envelope was found before any token object was made');
      for (const k of bad) assert.equal(inspector.find([{ type: K.CKA_LABEL, value: k.handle }]).length, 0, `${k.handle} not imported`);
      assert.equal(inspector.exportableSessionObjects(), 0, 'no batch key or session key is left');
      // Working copies of KEKs (WRAP and UNWRAP) may stay; a batch key (UNWRAP only) may not.
      assert.equal(inspector.find([{ type: K.CKA_TOKEN, value: false }, { type: K.CKA_UNWRAP, value: true }, { type: K.CKA_WRAP, value: false }]).length, 0, 'no batch key is left');
      // Derivation in chunks too, and undone the same way.
      const master = { handle: derivationKeyHandle('chunks-vendor'), usage: 'derivation' as const, key: randomBytes(16) };
      await chunked.importSealed(sealed(receiving, [master]));
      const derived = Array.from({ length: 10 }, (_, i) => ({ handle: rootKeyHandle(`70B3D57EFF00000${i}`, 'NwkKey', 'chunks'), block: randomBytes(16) }));
      await rejectsWith(chunked.importDerived({ master: master.handle, keys: [...derived, { handle: good[0]!.handle, block: randomBytes(16) }] }), 'KEY_EXISTS');
      await chunked.importDerived({ master: master.handle, keys: derived });
      for (const d of derived) assert.equal(inspector.find([{ type: K.CKA_LABEL, value: d.handle }]).length, 1);
      await chunked.deleteKeys(derived.map((d) => d.handle));
      for (const d of derived) assert.equal(inspector.find([{ type: K.CKA_LABEL, value: d.handle }]).length, 0);
    } finally {
      await chunked.close();
    }
    // The module's custody (still open) may have made a working copy meanwhile (its health check MACs with a root
    // key); anything else new would have been left by the closed one.
    for (const object of inspector.find([{ type: K.CKA_TOKEN, value: false }]).filter((o) => !before.has(o.toString('hex')))) {
      assert.deepEqual(inspector.attribute(object, K.CKA_CLASS).subarray(0, 1), Buffer.of(K.CKO_SECRET_KEY), 'a secret key');
      assert.deepEqual(inspector.attribute(object, K.CKA_SIGN), Buffer.of(1), 'a working copy of a root key, not a batch key');
      assert.deepEqual(inspector.attribute(object, K.CKA_EXTRACTABLE), Buffer.of(0));
    }
  });

  it('a failure after some chunks were stored (the derivation master deleted mid-import) removes what the earlier chunks created', async () => {
    // Working copies made at every use, so a chunk that starts after the master is gone fails on the token.
    const chunked = await openPkcs11Token(softhsmModulePath(), { label: main.label, pin: main.pin }, { importChunkSize: 4, workingCopyTtlMs: 0 });
    try {
      const master = { handle: derivationKeyHandle('vanishing-vendor'), usage: 'derivation' as const, key: randomBytes(16) };
      await chunked.importSealed(sealed(receiving, [master]));
      const keys = Array.from({ length: 24 }, (_, i) => ({ handle: rootKeyHandle(`70B3D57EEE0000${i.toString(16).padStart(2, '0').toUpperCase()}`, 'AppKey', 'vanishing'), block: randomBytes(16) }));
      // The master is destroyed when the first chunk's answer arrives: the pool hears it first, but takes the next
      // chunk only after this listener (the same message event), so no worker is using the token meanwhile.
      // (Polling the token while a worker creates keys can itself fail the creation on SoftHSM2.)
      let destroyed = false;
      const destroyAfterFirstChunk = (): void => {
        if (destroyed || inspector.find([{ type: K.CKA_TOKEN, value: true }, { type: K.CKA_LABEL, value: keys[0]!.handle }]).length === 0) return;
        inspector.p.C_DestroyObject(inspector.session, inspector.byLabel(master.handle));
        destroyed = true;
      };
      const workers = pkcs11WorkersForTest(chunked);
      for (const w of workers) w.on('message', destroyAfterFirstChunk);
      const error = await chunked.importDerived({ master: master.handle, keys }).then(() => undefined, (e: unknown) => e);
      for (const w of workers) w.off('message', destroyAfterFirstChunk);
      assert.ok(destroyed, 'the master was destroyed after the first chunk');
      assert.ok(error instanceof CustodyError && error.code === 'KEY_NOT_FOUND', `expected KEY_NOT_FOUND, got ${String(error)}`);
      for (const k of keys) assert.equal(inspector.find([{ type: K.CKA_LABEL, value: k.handle }]).length, 0, `${k.handle} removed again`);
    } finally {
      await chunked.close();
    }
  });

  it('deleting a receiving key destroys its private and public key objects', async () => {
    const other = await custody.createReceivingKey();
    const handle = receivingKeyHandle(other.kid);
    assert.equal(inspector.find([{ type: K.CKA_LABEL, value: handle }]).length, 2);
    await custody.deleteKey(handle);
    assert.equal(inspector.find([{ type: K.CKA_LABEL, value: handle }]).length, 0);
    assert.ok(!(await custody.listReceivingKeys()).some((k) => k.kid === other.kid));
  });
});
