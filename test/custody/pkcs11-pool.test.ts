import assert from 'node:assert/strict';
import { constants, createCipheriv, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import type * as Pkcs11js from 'pkcs11js';
import { CustodyError, type KeyCustody, type KeyDestination, type ReceivingKeyInfo, type SealedImport, kekHandle, receivingKeyHandle } from '../../src/custody/index.js';
import { rejectsWith } from '../helpers/custody-errors.js';
import { type ReplicaEvent, ReplicatedKeyCustody, openPkcs11Custody, openPkcs11Token } from '../../src/custody/pkcs11/index.js';
import { aesCmac, aesKeyWrap } from '../../src/custody/primitives.js';
import { legacySessionKeyBlock, netIdFromBeHex } from '../../src/protocol/index.js';
import { type TestToken, createTestToken, disableToken, privateModuleCopy, softhsmModulePath, stallToken, useTemporarySoftHsmConfig } from '../helpers/softhsm.js';
import { hex, loadVectors, toHexUpper } from '../helpers/vectors.js';

/*
 * Each member loads its own copy of the SoftHSM2 library (as two HSMs have their own client libraries): SoftHSM2
 * treats a token that failed as invalid until its library is initialised again, which readmission does by closing
 * and reopening the member.
 *
 * A pool of two SoftHSM2 tokens (replicated-custody.ts over PKCS#11 custody): every key on every token, failover
 * when a token fails under load, readmission when it returns, writes that need the whole pool and are undone when
 * one token refuses. Tokens are failed for real: their storage is taken away (helpers/softhsm.ts disableToken), or
 * a key is destroyed on one token by a PKCS#11 client of our own.
 */

const K = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11js;

/** Our own PKCS#11 client on several tokens: one library load, one logged-in session per token. */
class Inspector {
  readonly p = new K.PKCS11();
  readonly #sessions = new Map<string, Buffer>();
  constructor() {
    this.p.load(softhsmModulePath());
    this.p.C_Initialize({ flags: K.CKF_OS_LOCKING_OK });
  }

  session(token: TestToken): Buffer {
    let session = this.#sessions.get(token.label);
    if (session === undefined) {
      const slot = this.p.C_GetSlotList(true).find((s) => {
        try {
          return this.p.C_GetTokenInfo(s).label.trimEnd() === token.label;
        } catch {
          return false; // a token disabled by another test
        }
      });
      assert.ok(slot, `inspector: token ${token.label} present`);
      session = this.p.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
      try {
        this.p.C_Login(session, K.CKU_USER, token.pin);
      } catch (error) {
        // The custody in this process logged the user in already: PKCS#11 login is per application and token.
        if (!String(error).includes('CKR_USER_ALREADY_LOGGED_IN')) throw error;
      }
      this.#sessions.set(token.label, session);
    }
    return session;
  }

  find(token: TestToken, template: Pkcs11js.Template): Buffer[] {
    const session = this.session(token);
    this.p.C_FindObjectsInit(session, template);
    try {
      return this.p.C_FindObjects(session, 1000);
    } finally {
      this.p.C_FindObjectsFinal(session);
    }
  }

  labels(token: TestToken, cls: number = K.CKO_SECRET_KEY): string[] {
    return this.find(token, [{ type: K.CKA_TOKEN, value: true }, { type: K.CKA_CLASS, value: cls }])
      .map((o) => this.p.C_GetAttributeValue(this.session(token), o, [{ type: K.CKA_LABEL }])[0]!.value.toString('utf8'))
      .sort();
  }

  attribute(token: TestToken, object: Buffer, type: number): Buffer {
    return this.p.C_GetAttributeValue(this.session(token), object, [{ type }])[0]!.value;
  }

  bool(token: TestToken, object: Buffer, type: number): boolean {
    return this.p.C_GetAttributeValue(this.session(token), object, [{ type }])[0]!.value[0] !== 0;
  }

  sessionObjects(token: TestToken): number {
    return this.find(token, [{ type: K.CKA_TOKEN, value: false }]).length;
  }

  destroy(token: TestToken, label: string): void {
    const [object] = this.find(token, [{ type: K.CKA_LABEL, value: label }, { type: K.CKA_TOKEN, value: true }]);
    assert.ok(object, `inspector: ${label} on ${token.label}`);
    this.p.C_DestroyObject(this.session(token), object);
  }

  close(): void {
    for (const s of this.#sessions.values()) this.p.C_CloseSession(s);
    this.p.C_Finalize();
    this.p.close();
  }
}

interface JoinRequestVector { name: string; key: string; mic: string; phyPayload: string }
const joinRequests = loadVectors<{ joinRequests: JoinRequestVector[] }>('lorawan-join').joinRequests;
/** The first published Join-request vector (spec-notes §1.12; sources cited in test/vectors/lorawan-join.json). */
const A = { devEui: '0004A30B001C0530', request: joinRequests[0]! };
const transportKek = randomBytes(16);
const nsKek = randomBytes(16);

interface Pool {
  readonly a: TestToken;
  readonly b: TestToken;
  readonly custody: ReplicatedKeyCustody;
  readonly events: ReplicaEvent[];
  readonly root: string;
}

let inspector: Inspector;
const opened: ReplicatedKeyCustody[] = [];
/** SoftHSM2 sees the tokens present when the library is initialised: every test's tokens are made up front. */
const spareTokens: TestToken[] = [];

before(() => {
  const tokenDir = useTemporarySoftHsmConfig();
  process.once('exit', () => rmSync(dirname(tokenDir), { recursive: true, force: true }));
  for (let i = 0; i < 30; i++) spareTokens.push(createTestToken(`pool-${i % 2 === 0 ? 'a' : 'b'}`));
  inspector = new Inspector();
});

function freshToken(): TestToken {
  const token = spareTokens.shift();
  assert.ok(token, 'a spare token (raise the count made in before())');
  return token;
}

// Each test's pool is closed after it, so its members' library copies are finalised (readmission needs that).
afterEach(async () => {
  for (const c of opened.splice(0)) await c.close();
});

after(() => inspector.close());

/** Two fresh tokens as one pool holding KEKs "transport" and "ns" and vector A's AppKey. Health checks run when a test asks. */
/**
 * `workingCopyTtlMs: 0` makes every operation copy its key from the token object again (token-session.ts keeps
 * session copies for 60 s by default), so that an operation notices at once a key gone from the token, or a token
 * whose key files stall — as every operation of a network HSM would.
 */
async function openPool(options: { operationTimeoutMs?: number; workingCopyTtlMs?: number } = {}): Promise<Pool> {
  const a = freshToken();
  const b = freshToken();
  const events: ReplicaEvent[] = [];
  const custody = await openPkcs11Custody(
    { modulePath: softhsmModulePath(), tokens: [{ ...a, modulePath: privateModuleCopy('a') }, { ...b, modulePath: privateModuleCopy('b') }] },
    { healthIntervalMs: 3_600_000, ...options, onEvent: (e) => events.push(e) },
  );
  assert.ok(custody instanceof ReplicatedKeyCustody);
  opened.push(custody);
  await custody.importKek('transport', transportKek);
  await custody.importKek('ns', nsKek);
  const root = `root/${A.devEui}/AppKey/pool`;
  await custody.importWrapped(root, 'root', aesKeyWrap(transportKek, hex(A.request.key)), 'transport');
  return { a, b, custody, events, root };
}

function state(pool: Pool, token: TestToken): string {
  return pool.custody.status().members.find((m) => m.name === token.label)!.state;
}

function member(pool: Pool, token: TestToken) {
  return pool.custody.status().members.find((m) => m.name === token.label)!;
}

const micInput = (): Buffer => hex(A.request.phyPayload).subarray(0, 19);
const expectedMic = (): string => A.request.mic;
const NS: KeyDestination = { kekLabel: 'ns' };
const sessionBlock = legacySessionKeyBlock('NwkSKey', { joinNonce: 1, netId: netIdFromBeHex('000013'), devNonce: 7 });

describe('a pool of two PKCS#11 tokens', () => {
  it('stores every key on every token, sensitive and non-extractable, and lists each once with both tokens as its location', async () => {
    const pool = await openPool();
    const expected = [kekHandle('ns'), kekHandle('transport'), pool.root].sort();
    for (const token of [pool.a, pool.b]) {
      assert.deepEqual(inspector.labels(token), expected, `keys on ${token.label}`);
      for (const label of expected) {
        const [object] = inspector.find(token, [{ type: K.CKA_LABEL, value: label }]);
        assert.equal(inspector.bool(token, object!, K.CKA_SENSITIVE), true);
        assert.equal(inspector.bool(token, object!, K.CKA_EXTRACTABLE), false);
      }
    }
    const listed = await pool.custody.listKeys();
    assert.deepEqual(listed.map((k) => k.handle).sort(), expected);
    for (const k of listed) assert.match(k.location ?? '', new RegExp(`"${pool.a.label}", "${pool.b.label}" \\(2 of 2\\)`));
  });

  it('spreads operations over both tokens, each giving the published MIC', async () => {
    const pool = await openPool();
    const mics = await Promise.all(Array.from({ length: 64 }, () => pool.custody.computeMic({ handle: pool.root }, micInput())));
    for (const mic of mics) assert.equal(toHexUpper(mic), expectedMic());
    assert.ok(member(pool, pool.a).operations > 0 && member(pool, pool.b).operations > 0, JSON.stringify(pool.custody.status()));
    for (const token of [pool.a, pool.b]) assert.equal(inspector.sessionObjects(token), 0);
  });

  it('keeps answering when a token fails under load, takes it out of service, refuses writes, and readmits it when it returns', async () => {
    const pool = await openPool();
    // The inspector opens its sessions now: its own library instance must not look at token b while b is away.
    for (const token of [pool.a, pool.b]) inspector.labels(token);
    let answered = 0;
    let failed: unknown;
    let stop = false;
    const worker = async (): Promise<void> => {
      while (!stop) {
        try {
          const [mic, exported]: [Buffer, { key: Buffer }[]] = await Promise.all([
            pool.custody.computeMic({ handle: pool.root }, micInput()),
            pool.custody.deriveAndExport(pool.root, [{ block: sessionBlock, to: NS }]),
          ]);
          assert.equal(toHexUpper(mic), expectedMic());
          assert.equal(exported[0]!.key.length, 24);
          answered++;
        } catch (error) {
          failed ??= error;
          stop = true;
        }
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, worker));
    while (answered < 100 && !stop) await new Promise((r) => setTimeout(r, 5));
    const restore = disableToken(pool.b.label);
    const atFailure = answered;
    // Operations on b may still succeed on its session copies of the keys; the health check finds the token gone.
    await pool.custody.checkHealth();
    while (answered < atFailure + 300 && !stop) await new Promise((r) => setTimeout(r, 5));
    stop = true;
    await load;
    assert.equal(failed, undefined, `an operation failed after the token was disabled: ${String(failed)}`);
    assert.notEqual(state(pool, pool.b), 'up');
    assert.ok(member(pool, pool.b).failures >= 1, 'the failed operations on b were counted');
    assert.equal(state(pool, pool.a), 'up');
    assert.ok(pool.events.some((e) => e.member === pool.b.label && (e.kind === 'member-down' || e.kind === 'member-inconsistent')));

    // Writes need the whole pool: refused, and nothing stored on the token in service.
    const before = inspector.labels(pool.a);
    await rejectsWith(pool.custody.importKek('as', randomBytes(16)), 'TOKEN_UNAVAILABLE', new RegExp(`"${pool.b.label}"`));
    await rejectsWith(pool.custody.importWrapped('root/x/AppKey/1', 'root', aesKeyWrap(transportKek, randomBytes(16)), 'transport'), 'TOKEN_UNAVAILABLE');
    await rejectsWith(pool.custody.deleteKey(pool.root), 'TOKEN_UNAVAILABLE');
    assert.deepEqual(inspector.labels(pool.a), before);

    // Still gone: the health check cannot reopen it.
    await pool.custody.checkHealth();
    assert.equal(state(pool, pool.b), 'down');
    assert.match(member(pool, pool.b).lastError ?? '', /TOKEN_UNAVAILABLE|token/i);

    restore();
    await pool.custody.checkHealth();
    assert.equal(state(pool, pool.b), 'up', JSON.stringify(pool.custody.status()));
    assert.equal(member(pool, pool.b).readmissions, 1);
    assert.ok(pool.events.some((e) => e.kind === 'member-readmitted' && e.member === pool.b.label));

    // Back in service: it answers again, and writes reach both tokens.
    const servedBefore = member(pool, pool.b).operations;
    await Promise.all(Array.from({ length: 32 }, () => pool.custody.computeMic({ handle: pool.root }, micInput())));
    assert.ok(member(pool, pool.b).operations > servedBefore);
    await pool.custody.importKek('as', randomBytes(16));
    for (const token of [pool.a, pool.b]) assert.ok(inspector.labels(token).includes(kekHandle('as')));
    for (const token of [pool.a, pool.b]) assert.equal(inspector.sessionObjects(token), 0);
  });

  it('takes a token that stops answering out of service after operationTimeoutMs, answers from the other, readmits it when it answers again', async () => {
    const pool = await openPool({ operationTimeoutMs: 300, workingCopyTtlMs: 0 });
    const stall = await stallToken(pool.b.label);
    let released = false;
    try {
      // Key operations on b now wait for its files: each one sent to b is abandoned after 300 ms and run on a.
      const exported = await Promise.all(Array.from({ length: 16 }, () => pool.custody.deriveAndExport(pool.root, [{ block: sessionBlock, to: NS }])));
      for (const [e] of exported) assert.equal(e!.key.length, 24);
      assert.equal(toHexUpper(await pool.custody.computeMic({ handle: pool.root }, micInput())), expectedMic());
      assert.equal(state(pool, pool.b), 'down');
      assert.match(member(pool, pool.b).lastError ?? '', /did not answer within 300 ms/);
      assert.ok(member(pool, pool.b).failures >= 1);
      assert.equal(state(pool, pool.a), 'up');

      // The health check cannot readmit it while it stalls (its check is a MIC with a pool key, which waits too).
      const check = pool.custody.checkHealth();
      await new Promise((r) => setTimeout(r, 200));
      await stall.release();
      released = true;
      await check;
      if (state(pool, pool.b) !== 'up') await pool.custody.checkHealth();
      assert.equal(state(pool, pool.b), 'up', JSON.stringify(pool.custody.status()));
      assert.equal(member(pool, pool.b).readmissions, 1);
      const servedBefore = member(pool, pool.b).operations;
      await Promise.all(Array.from({ length: 16 }, () => pool.custody.computeMic({ handle: pool.root }, micInput())));
      assert.ok(member(pool, pool.b).operations > servedBefore, 'b serves again');
    } finally {
      if (!released) await stall.release();
    }
  });

  it('takes out a token that lacks a key the other holds, keeps answering from the other, and readmits it once they agree', async () => {
    const pool = await openPool({ workingCopyTtlMs: 0 });
    inspector.destroy(pool.b, pool.root);
    for (let i = 0; i < 16; i++) assert.equal(toHexUpper(await pool.custody.computeMic({ handle: pool.root }, micInput())), expectedMic());
    assert.equal(state(pool, pool.b), 'inconsistent');
    assert.match(member(pool, pool.b).lastError ?? '', new RegExp(pool.root));
    assert.equal(await pool.custody.hasKey(pool.root), true);

    await pool.custody.checkHealth();
    assert.equal(state(pool, pool.b), 'inconsistent', 'still lacks the key');
    assert.match(member(pool, pool.b).lastError ?? '', /lacks 1 key/);

    // The operator removes the key from the other token too: the tokens agree again.
    inspector.destroy(pool.a, pool.root);
    await pool.custody.checkHealth();
    assert.equal(state(pool, pool.b), 'up');
    await rejectsWith(pool.custody.computeMic({ handle: pool.root }, micInput()), 'KEY_NOT_FOUND');
    assert.equal(state(pool, pool.a), 'up', 'a key missing everywhere is the caller’s error, not a token failure');
    assert.equal(state(pool, pool.b), 'up');
  });

  it('undoes a write on every token when one token refuses it', async () => {
    const pool = await openPool();
    inspector.destroy(pool.b, kekHandle('transport'));
    const handle = 'root/0000000000000001/AppKey/partial';
    await rejectsWith(pool.custody.importWrapped(handle, 'root', aesKeyWrap(transportKek, randomBytes(16)), 'transport'), 'TOKEN_UNAVAILABLE', /removed from the others/);
    for (const token of [pool.a, pool.b]) assert.ok(!inspector.labels(token).includes(handle), `no ${handle} on ${token.label}`);
    assert.equal(state(pool, pool.b), 'inconsistent');
    assert.ok(pool.events.some((e) => e.kind === 'write-undone' && e.member === pool.a.label && e.handle === handle));
  });

  it('answers a request every token refuses with that refusal, storing nothing and keeping both tokens in service', async () => {
    const pool = await openPool();
    const before = [inspector.labels(pool.a), inspector.labels(pool.b)];
    await rejectsWith(pool.custody.importWrapped('root/0000000000000002/AppKey/1', 'root', aesKeyWrap(randomBytes(16), randomBytes(16)), 'transport'), 'UNWRAP_FAILED');
    await rejectsWith(pool.custody.importKek('ns', randomBytes(16)), 'KEY_EXISTS');
    await rejectsWith(pool.custody.computeMic({ handle: 'root/nope' }, micInput()), 'KEY_NOT_FOUND');
    await rejectsWith(pool.custody.deriveAndExport(pool.root, [{ block: sessionBlock, to: { kekLabel: 'nope' } }]), 'KEK_NOT_FOUND');
    assert.deepEqual([inspector.labels(pool.a), inspector.labels(pool.b)], before);
    assert.deepEqual(pool.custody.status().members.map((m) => m.state), ['up', 'up']);
    assert.deepEqual(pool.custody.status().members.map((m) => m.failures), [0, 0]);
  });

  it('opens with a token unavailable: serves from the others and readmits it when it appears; refuses when none opens', async () => {
    const a = freshToken();
    const b = freshToken();
    const restore = disableToken(b.label);
    const events: ReplicaEvent[] = [];
    const custody = (await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ ...a, modulePath: privateModuleCopy('a') }, { ...b, modulePath: privateModuleCopy('b') }] }, { healthIntervalMs: 3_600_000, onEvent: (e) => events.push(e) })) as ReplicatedKeyCustody;
    opened.push(custody);
    assert.deepEqual(custody.status().members.map((m) => m.state), ['up', 'down']);
    assert.ok(events.some((e) => e.kind === 'member-down' && e.member === b.label));
    await custody.probe();
    restore();
    await custody.checkHealth();
    assert.deepEqual(custody.status().members.map((m) => m.state), ['up', 'up'], JSON.stringify(custody.status()));

    await rejectsWith(
      openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: 'absent-1', pin: '1' }, { label: 'absent-2', pin: '1' }] }),
      'TOKEN_UNAVAILABLE',
      /no custody member could be opened: absent-1: .*absent-2: /,
    );
  });

  it('keeps no key value in its status or events', async () => {
    const pool = await openPool();
    inspector.destroy(pool.b, pool.root);
    await pool.custody.computeMic({ handle: pool.root }, micInput());
    const text = JSON.stringify({ status: pool.custody.status(), events: pool.events });
    for (const key of [transportKek, nsKek, hex(A.request.key)]) {
      assert.ok(!text.toLowerCase().includes(key.toString('hex')), 'no key in hex');
      assert.ok(!text.includes(key.toString('base64')), 'no key in base64');
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Receiving key and sealed batches on a pool (docs/security.md, "Receiving key and sealed batches").

function sealTo(receiving: ReceivingKeyInfo, keys: readonly { handle: string; key: Buffer }[]): SealedImport {
  const batchKey = randomBytes(32);
  const wrap = (key: Buffer): Buffer => {
    const c = createCipheriv('id-aes256-wrap', batchKey, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
    return Buffer.concat([c.update(key), c.final()]);
  };
  const encrypted = publicEncrypt({ key: createPublicKey({ key: { ...receiving.jwk }, format: 'jwk' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, batchKey);
  return { receivingKid: receiving.kid, batchKey: { oaep: 'sha1', encrypted }, keys: keys.map((k) => ({ handle: k.handle, usage: 'root', wrapped: wrap(k.key) })) };
}

function poolBatch(tag: string, count: number): { handle: string; key: Buffer }[] {
  return Array.from({ length: count }, (_, i) => ({ handle: `root/70B3D57E${i.toString(16).padStart(8, '0').toUpperCase()}/AppKey/${tag}`, key: randomBytes(16) }));
}

describe('a pool of two PKCS#11 tokens / receiving key and sealed batches', () => {
  it('createReceivingKey puts one receiving key on every token: a non-extractable, sensitive, UNWRAP-only private key and its public key; no extractable copy, transport key or other session object is left', async () => {
    const pool = await openPool();
    const receiving = await pool.custody.createReceivingKey();
    const handle = receivingKeyHandle(receiving.kid);
    for (const token of [pool.a, pool.b]) {
      assert.deepEqual(inspector.labels(token, K.CKO_PRIVATE_KEY), [handle], `private keys on ${token.label}`);
      assert.deepEqual(inspector.labels(token, K.CKO_PUBLIC_KEY), [handle], `public keys on ${token.label}`);
      const [priv] = inspector.find(token, [{ type: K.CKA_CLASS, value: K.CKO_PRIVATE_KEY }, { type: K.CKA_LABEL, value: handle }]);
      const [pub] = inspector.find(token, [{ type: K.CKA_CLASS, value: K.CKO_PUBLIC_KEY }, { type: K.CKA_LABEL, value: handle }]);
      assert.equal(inspector.bool(token, priv!, K.CKA_TOKEN), true);
      assert.equal(inspector.bool(token, priv!, K.CKA_SENSITIVE), true);
      assert.equal(inspector.bool(token, priv!, K.CKA_EXTRACTABLE), false);
      assert.equal(inspector.bool(token, priv!, K.CKA_UNWRAP), true);
      assert.equal(inspector.bool(token, priv!, K.CKA_DECRYPT), false);
      assert.equal(inspector.bool(token, priv!, K.CKA_SIGN), false);
      // Honest: every copy was unwrapped (docs/security.md), so the token does not call it "never extractable".
      assert.equal(inspector.bool(token, priv!, K.CKA_NEVER_EXTRACTABLE), false);
      assert.throws(() => inspector.attribute(token, priv!, K.CKA_PRIVATE_EXPONENT), /CKR_ATTRIBUTE_SENSITIVE/);
      assert.equal(inspector.attribute(token, pub!, K.CKA_MODULUS).toString('base64url'), receiving.jwk.n);
      assert.equal(inspector.attribute(token, priv!, K.CKA_MODULUS).toString('base64url'), receiving.jwk.n);
      assert.equal(inspector.find(token, [{ type: K.CKA_EXTRACTABLE, value: true }]).length, 0, `no extractable object on ${token.label}`);
      assert.equal(inspector.sessionObjects(token), 0, `no session object on ${token.label}`);
    }
    assert.deepEqual((await pool.custody.listReceivingKeys()).map((k) => k.kid), [receiving.kid]);
    const listed = (await pool.custody.listKeys()).find((k) => k.handle === handle);
    assert.equal(listed?.usage, 'receiving');
    assert.match(listed.location ?? '', /\(2 of 2\)/);

    // Each token opens the batch with its own copy: an import reaches both, and both tokens compute the same MICs.
    const keys = poolBatch('pool-sealed', 6);
    await pool.custody.importSealed(sealTo(receiving, keys));
    for (const token of [pool.a, pool.b]) for (const k of keys) assert.ok(inspector.labels(token).includes(k.handle), `${k.handle} on ${token.label}`);
    const mics = await Promise.all(Array.from({ length: 32 }, (_, i) => pool.custody.computeMic({ handle: keys[i % keys.length]!.handle }, Buffer.alloc(9, i))));
    mics.forEach((mic, i) => assert.deepEqual(mic, aesCmac(keys[i % keys.length]!.key, Buffer.alloc(9, i)).subarray(0, 4)));
    assert.ok(member(pool, pool.a).operations > 0 && member(pool, pool.b).operations > 0);

    await pool.custody.deleteKeys(keys.map((k) => k.handle));
    for (const token of [pool.a, pool.b]) for (const k of keys) assert.ok(!inspector.labels(token).includes(k.handle));
    await pool.custody.deleteKey(handle);
    for (const token of [pool.a, pool.b]) assert.deepEqual(inspector.labels(token, K.CKO_PRIVATE_KEY), []);
  });

  it('a sealed import every token refuses (one corrupted key) leaves nothing on either token and keeps both in service', async () => {
    const pool = await openPool();
    const receiving = await pool.custody.createReceivingKey();
    const before = [inspector.labels(pool.a), inspector.labels(pool.b)];
    const input = sealTo(receiving, poolBatch('pool-corrupt', 12));
    const wrapped = Buffer.from(input.keys[9]!.wrapped);
    wrapped[3] = (wrapped[3] ?? 0) ^ 0x10;
    await rejectsWith(pool.custody.importSealed({ ...input, keys: input.keys.map((k, i) => (i === 9 ? { ...k, wrapped } : k)) }), 'UNWRAP_FAILED');
    await rejectsWith(pool.custody.importSealed({ ...input, batchKey: { oaep: 'sha256', encrypted: input.batchKey.encrypted } }), 'MECHANISM_UNSUPPORTED');
    assert.deepEqual([inspector.labels(pool.a), inspector.labels(pool.b)], before);
    assert.deepEqual(pool.custody.status().members.map((m) => m.state), ['up', 'up']);
    for (const token of [pool.a, pool.b]) assert.equal(inspector.sessionObjects(token), 0);
  });

  it('a sealed import one token cannot complete (its receiving key is gone) is undone on the other, which reports the undo', async () => {
    const pool = await openPool();
    const receiving = await pool.custody.createReceivingKey();
    const handle = receivingKeyHandle(receiving.kid);
    const [priv] = inspector.find(pool.b, [{ type: K.CKA_CLASS, value: K.CKO_PRIVATE_KEY }, { type: K.CKA_LABEL, value: handle }]);
    inspector.p.C_DestroyObject(inspector.session(pool.b), priv!);
    const keys = poolBatch('pool-partial', 8);
    await rejectsWith(pool.custody.importSealed(sealTo(receiving, keys)), 'TOKEN_UNAVAILABLE', /8 keys .* were not stored/);
    for (const token of [pool.a, pool.b]) for (const k of keys) assert.ok(!inspector.labels(token).includes(k.handle), `no ${k.handle} on ${token.label}`);
    assert.equal(state(pool, pool.b), 'inconsistent');
    assert.ok(pool.events.some((e) => e.kind === 'write-undone' && e.member === pool.a.label && e.count === 8));
  });

  it('a receiving key that cannot be copied to one token is removed from the other (all or nothing)', async () => {
    const a = freshToken();
    const b = freshToken();
    const events: ReplicaEvent[] = [];
    const failing = (custody: KeyCustody): KeyCustody =>
      new Proxy(custody, {
        get(target, property, receiver) {
          if (property === 'importReceivingReplica') return () => Promise.reject(new CustodyError('TOKEN_ERROR', 'storing the copy failed (test)'));
          const value: unknown = Reflect.get(target, property, receiver);
          return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
    const pool = await ReplicatedKeyCustody.open(
      'pkcs11',
      [
        { name: a.label, open: () => openPkcs11Token(privateModuleCopy('a'), a) },
        { name: b.label, open: async () => failing(await openPkcs11Token(privateModuleCopy('b'), b)) },
      ],
      { healthIntervalMs: 3_600_000, onEvent: (e) => events.push(e) },
    );
    opened.push(pool);
    await rejectsWith(pool.createReceivingKey(), 'TOKEN_UNAVAILABLE', /removed from the others/);
    for (const token of [a, b]) {
      assert.deepEqual(inspector.labels(token, K.CKO_PRIVATE_KEY), [], `no receiving private key on ${token.label}`);
      assert.deepEqual(inspector.labels(token, K.CKO_PUBLIC_KEY), [], `no receiving public key on ${token.label}`);
      assert.equal(inspector.sessionObjects(token), 0, `no session object on ${token.label}`);
    }
    assert.ok(events.some((e) => e.kind === 'write-undone' && e.member === a.label && e.handle.startsWith('receiving/')));
    assert.equal(pool.status().members.find((m) => m.name === b.label)?.state, 'down');
  });
});
