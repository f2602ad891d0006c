import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import { after, before, describe, it } from 'node:test';
import type * as Pkcs11js from 'pkcs11js';
import { CustodyError, derivationKeyHandle, rootKeyHandle } from '../../src/custody/index.js';
import { acquireModule, releaseModule } from '../../src/custody/pkcs11/module.js';
import { openPkcs11Token } from '../../src/custody/pkcs11/index.js';
import { TokenLock } from '../../src/custody/pkcs11/token-lock.js';
import { settleDuplicates } from '../../src/custody/pkcs11/transient-objects.js';
import { TokenSession } from '../../src/custody/pkcs11/token-session.js';
import { aesCmac, aesKeyWrap } from '../../src/custody/primitives.js';
import { type TestToken, createTestToken, softhsmModulePath, useTemporarySoftHsmConfig } from '../helpers/softhsm.js';

/*
 * Several threads of one process on one SoftHSM2 token, as the PKCS#11 pool's workers are.
 *
 * SoftHSM2 gives a C_CopyObject copy the original's attributes (CKA_TOKEN=true, the label) before it applies the
 * copy's CKA_TOKEN=false, so a search by another thread of the process can find a root key twice for a moment, and
 * reading the half-made copy's attributes can fail. Working copies made by one worker's session must never make
 * another session of the same pool refuse the key ("held twice", or an enumeration that fails): a pool test once
 * failed that way in CI. The pool's lock on the token's objects (src/custody/pkcs11/token-lock.ts) keeps copies and
 * searches apart; searching again after a pause (transient-objects.ts) covers copies made outside it, and is
 * checked here by unit tests only: a thread preempted in the middle of a copy for longer than the pauses defeats it,
 * which a loaded machine does (1 session in 500 under the full test suite). And a search during the creation of a token
 * object can fail the creation (src/custody/pkcs11/token-lock.ts): an import must not fail while other workers search.
 */

const K = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11js;
const ROOT = 'root/copyrace/AppKey/1';
const rootKey = randomBytes(16);
const message = randomBytes(19);
let tokenDir: string;
let token: TestToken;

/**
 * A thread of this process that copies ROOT into session objects and destroys them, back to back, until told to stop:
 * as a pool worker makes its working copies, holding the pool's lock on the token's objects for each copy.
 */
const COPIER = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.lock).then(({ TokenLock }) => {
  const lock = new TokenLock(workerData.buffer);
  const K = require(workerData.pkcs11js);
  const p = new K.PKCS11();
  p.load(workerData.module);
  try { p.C_Initialize({ flags: K.CKF_OS_LOCKING_OK }); } catch (e) { if (!/ALREADY_INITIALIZED/.test(e.message)) throw e; }
  const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === workerData.label);
  const session = p.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
  p.C_FindObjectsInit(session, [{ type: K.CKA_TOKEN, value: true }, { type: K.CKA_LABEL, value: workerData.root }]);
  const [root] = p.C_FindObjects(session, 1);
  p.C_FindObjectsFinal(session);
  let stop = false;
  let copies = 0;
  parentPort.on('message', () => (stop = true));
  parentPort.postMessage('copying');
  (function copyMore() {
    for (let i = 0; i < 100; i++) {
      p.C_DestroyObject(session, lock.exclusive(() => p.C_CopyObject(session, root, [{ type: K.CKA_TOKEN, value: false }])));
      copies++;
    }
    if (!stop) return setImmediate(copyMore);
    p.C_CloseSession(session);
    parentPort.postMessage(copies);
    parentPort.close(); // ends the thread: it is not terminated from outside (see pkcs11-workers.test.ts, crash())
  })();
});
`;

function startCopier(lockBuffer: SharedArrayBuffer): { stop(): Promise<number> } {
  const worker = new Worker(COPIER, {
    eval: true,
    workerData: {
      pkcs11js: createRequire(import.meta.url).resolve('pkcs11js'),
      lock: new URL('../../src/custody/pkcs11/token-lock.js', import.meta.url).href,
      buffer: lockBuffer,
      module: softhsmModulePath(),
      label: token.label,
      root: ROOT,
    },
  });
  const started = new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    async stop() {
      await started;
      const copies = new Promise<number>((resolve, reject) => {
        worker.on('message', (m) => typeof m === 'number' && resolve(m));
        worker.once('error', reject);
      });
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      worker.postMessage('stop');
      const n = await copies;
      await exited;
      return n;
    },
  };
}

before(async () => {
  tokenDir = useTemporarySoftHsmConfig();
  token = createTestToken('copyrace');
  const custody = await openPkcs11Token(softhsmModulePath(), { label: token.label, pin: token.pin }, { workers: 1 });
  try {
    const kek = randomBytes(16);
    await custody.importKek('copyrace', kek);
    await custody.importWrapped(ROOT, 'root', aesKeyWrap(kek, rootKey), 'copyrace');
  } finally {
    await custody.close();
  }
});

after(() => rmSync(dirname(tokenDir), { recursive: true, force: true }));

describe('a key copied by another thread of the process', () => {
  it('copied by a worker of the same pool, is never refused by a new session and is listed once, though a bare search sees the copy as a second token key', async () => {
    const module = acquireModule(softhsmModulePath());
    const expected = aesCmac(rootKey, message).subarray(0, 4);
    // Keeps the user logged in (the login is per process) while sessions come and go.
    const anchor = TokenSession.open(module, token);
    const lockBuffer = TokenLock.newBuffer();
    const copier = startCopier(lockBuffer);
    const search = (s: Pkcs11js.Handle): Pkcs11js.Handle[] => {
      module.pkcs11.C_FindObjectsInit(s, [{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_TOKEN, value: true }, { type: K.CKA_LABEL, value: ROOT }]);
      try {
        return module.pkcs11.C_FindObjects(s, 4);
      } finally {
        module.pkcs11.C_FindObjectsFinal(s);
      }
    };
    const bare = module.pkcs11.C_OpenSession(module.pkcs11.C_GetSlotList(true).find((s) => module.pkcs11.C_GetTokenInfo(s).label.trim() === token.label)!, K.CKF_SERIAL_SESSION);
    let sessions = 0;
    let bareSearches = 0;
    let bareDuplicates = 0;
    const refusals: string[] = [];
    try {
      // Until the race has shown itself to bare searches a few times (so this test can fail), within 30 s.
      const deadline = performance.now() + 30_000;
      while ((bareDuplicates < 5 || sessions < 500) && performance.now() < deadline) {
        bareSearches++;
        if (search(bare).length > 1) bareDuplicates++;
        // A new session builds its label index from a fresh enumeration of the token's keys, then uses the key.
        // As a worker of the same pool: the same lock on the token's objects.
        const session = TokenSession.open(module, token, undefined, { workingCopyTtlMs: 0, objectLock: lockBuffer });
        sessions++;
        try {
          assert.deepEqual(session.cmac(ROOT, undefined, message).subarray(0, 4), expected);
          const listed = session.list().filter((k) => k.handle === ROOT).length;
          if (listed !== 1) refusals.push(`listed ${listed} times`);
        } catch (error) {
          if (!(error instanceof CustodyError)) throw error;
          refusals.push(error.message);
        } finally {
          session.close();
        }
        // Lets the copier's thread run on a machine with one free core.
        if (sessions % 50 === 0) await new Promise((r) => setImmediate(r));
      }
    } finally {
      const copies = await copier.stop();
      module.pkcs11.C_CloseSession(bare);
      anchor.close();
      releaseModule(module);
      assert.ok(copies > 1000, `the copier made ${copies} copies`);
    }
    assert.ok(bareDuplicates >= 1, `bare searches saw the copy as a second token key ${bareDuplicates} times in ${bareSearches}`);
    assert.deepEqual(refusals, [], `${refusals.length} of ${sessions} sessions refused the key`);
  });
});

describe('token objects created while other workers search the token', () => {
  it('an import of 96 derived keys in chunks of 4 succeeds while another worker searches by label without pause', async () => {
    // On SoftHSM2 a search by one thread during another's creation of a token object can fail the creation
    // (src/custody/pkcs11/token-lock.ts); the pool's workers share a lock so that it cannot happen between them.
    const custody = await openPkcs11Token(softhsmModulePath(), { label: token.label, pin: token.pin }, { workers: 2, importChunkSize: 4 });
    try {
      const master = derivationKeyHandle('searched-vendor');
      const kek = randomBytes(16);
      await custody.importKek('searched', kek);
      await custody.importWrapped(master, 'derivation', aesKeyWrap(kek, randomBytes(16)), 'searched');
      const keys = Array.from({ length: 96 }, (_, i) => ({ handle: rootKeyHandle(`70B3D57EEE0100${i.toString(16).padStart(2, '0').toUpperCase()}`, 'AppKey', 'searched'), block: randomBytes(16) }));
      let importing = true;
      let searches = 0;
      // hasKey of a key that is not there searches the token by label every time.
      const searcher = (async () => {
        while (importing) {
          assert.equal(await custody.hasKey('root/0000000000000000/AppKey/absent'), false);
          searches++;
        }
      })();
      try {
        await custody.importDerived({ master, keys });
      } finally {
        importing = false;
        await searcher;
      }
      assert.ok(searches > 20, `${searches} searches ran during the import`);
      for (const k of keys) assert.equal(await custody.hasKey(k.handle), true, k.handle);
    } finally {
      await custody.close();
    }
  });
});

describe('TokenLock', () => {
  it('is freed by releaseIfHeldBy when the thread holding it ended inside a locked call, and only then', async () => {
    const buffer = TokenLock.newBuffer();
    const holder = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       import(workerData.lock).then(({ TokenLock }) => new TokenLock(workerData.buffer).exclusive(() => process.exit(0)));`,
      { eval: true, workerData: { lock: new URL('../../src/custody/pkcs11/token-lock.js', import.meta.url).href, buffer } },
    );
    const holderId = holder.threadId;
    await new Promise((resolve) => holder.once('exit', resolve));
    const word = new Int32Array(buffer);
    assert.equal(word[0], holderId + 1, 'the ended thread still holds the lock');
    const lock = new TokenLock(buffer);
    lock.releaseIfHeldBy(holderId + 1000);
    assert.equal(word[0], holderId + 1, 'another thread id frees nothing');
    lock.releaseIfHeldBy(holderId);
    assert.equal(word[0], 0);
    assert.equal(lock.exclusive(() => lock.exclusive(() => 'nested')), 'nested');
    assert.equal(word[0], 0, 'free again after a nested call');
  });
});

describe('settleDuplicates', () => {
  const search = (answers: number[][]) => {
    let calls = 0;
    return { next: () => answers[Math.min(calls++, answers.length - 1)]!.map((n) => Buffer.from([n])), calls: () => calls };
  };

  it('searches no more when the first answer holds at most one object', () => {
    const s = search([[9]]);
    assert.equal(settleDuplicates([Buffer.from([1])], s.next, [0, 0]).length, 1);
    assert.equal(settleDuplicates([], s.next, [0, 0]).length, 0);
    assert.equal(s.calls(), 0);
  });

  it('searches again while the answer holds two, and stops at the first that holds one', () => {
    const s = search([[1, 2], [1]]);
    const found = settleDuplicates([Buffer.from([1]), Buffer.from([2])], s.next, [0, 0, 0, 0]);
    assert.equal(found.length, 1);
    assert.equal(s.calls(), 2);
  });

  it('answers the duplicate that stays after every pause', () => {
    const s = search([[1, 2]]);
    assert.equal(settleDuplicates([Buffer.from([1]), Buffer.from([2])], s.next, [0, 0, 0]).length, 2);
    assert.equal(s.calls(), 3);
  });
});
