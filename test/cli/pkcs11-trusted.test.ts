import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import type * as Pkcs11js from 'pkcs11js';
import { serve } from '../../src/app/serve.js';
import { CustodyError } from '../../src/custody/index.js';
import { createTrustedKeks, openPkcs11Custody } from '../../src/custody/pkcs11/index.js';
import { aesKeyWrap } from '../../src/custody/primitives.js';
import { cliJson, cliOk, runCli } from '../helpers/cli-run.js';
import { type TestToken, createTestToken, softhsmModulePath } from '../helpers/softhsm.js';
import { joinReq, resultCode } from '../helpers/ts002.js';
import { VECTOR_A } from '../helpers/spec-vectors.js';

/*
 * Trusted-KEK mode (docs/security.md): KEKs made by the Security Officer (CKA_TRUSTED) in `joinkeep kek add`, and
 * session keys derived with CKA_WRAP_WITH_TRUSTED so that the token wraps them only under such KEKs. Driven through
 * the CLI (each command its own process, as the SO and user logins require), checked with an independent PKCS#11
 * client that logs in only between CLI runs, and with a join answered byte for byte as spec-notes §1.12 A says.
 */

const K = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11js;

/** Opens the token as the user for one look, then logs out and finalizes, so the next CLI run's SO login is free. */
function inspect<T>(token: TestToken, look: (p: Pkcs11js.PKCS11, session: Buffer) => T): T {
  const p = new K.PKCS11();
  p.load(softhsmModulePath());
  p.C_Initialize({ flags: K.CKF_OS_LOCKING_OK });
  try {
    const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trimEnd() === token.label);
    assert.ok(slot);
    const session = p.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
    // Public objects first, without a login: nobody may find a KEK there.
    const find = (template: Pkcs11js.Template): Buffer[] => {
      p.C_FindObjectsInit(session, template);
      try {
        return p.C_FindObjects(session, 1000);
      } finally {
        p.C_FindObjectsFinal(session);
      }
    };
    assert.equal(find([{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }]).length, 0, 'no public secret key (no KEK left public) on the token');
    p.C_Login(session, K.CKU_USER, token.pin);
    try {
      return look(p, session);
    } finally {
      p.C_Logout(session);
      p.C_CloseSession(session);
    }
  } finally {
    p.C_Finalize();
    p.close();
  }
}

function attr(p: Pkcs11js.PKCS11, session: Buffer, object: Buffer, type: number): boolean {
  return p.C_GetAttributeValue(session, object, [{ type }])[0]!.value[0] === 1;
}

function keksOn(token: TestToken): Map<string, Record<string, boolean>> {
  return inspect(token, (p, session) => {
    p.C_FindObjectsInit(session, [{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_TOKEN, value: true }]);
    const objects = p.C_FindObjects(session, 1000);
    p.C_FindObjectsFinal(session);
    const out = new Map<string, Record<string, boolean>>();
    for (const o of objects) {
      const label = p.C_GetAttributeValue(session, o, [{ type: K.CKA_LABEL }])[0]!.value.toString('utf8');
      if (!label.startsWith('kek')) continue;
      assert.throws(() => p.C_GetAttributeValue(session, o, [{ type: K.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/, label);
      out.set(label, {
        private: attr(p, session, o, K.CKA_PRIVATE),
        trusted: attr(p, session, o, K.CKA_TRUSTED),
        sensitive: attr(p, session, o, K.CKA_SENSITIVE),
        extractable: attr(p, session, o, K.CKA_EXTRACTABLE),
        wrap: attr(p, session, o, K.CKA_WRAP),
        unwrap: attr(p, session, o, K.CKA_UNWRAP),
        sign: attr(p, session, o, K.CKA_SIGN),
        derive: attr(p, session, o, K.CKA_DERIVE),
      });
    }
    return out;
  });
}

const TRUSTED_KEK = { private: true, trusted: true, sensitive: true, extractable: false, wrap: true, unwrap: true, sign: false, derive: false };

/** spec-notes §1.12 A (1.0.3) and E: the JoinAns the software keystore gives (test/join/activation.test.ts). */
const A = VECTOR_A;
const KEKS = {
  ns: { label: 'ns-000013', key: '000102030405060708090A0B0C0D0E0F' },
  as: { label: 'as-1', key: '101112131415161718191A1B1C1D1E1F' },
  import: { label: 'factory-import', key: '404142434445464748494A4B4C4D4E4F' },
};
const NS_TOKEN = 'ns-000013-token-for-the-trusted-test';
const AS_TOKEN = 'as-1-token-for-the-trusted-test-0123';

describe('CLI / PKCS#11 trusted-KEK mode (SoftHSM2)', () => {
  let dir: string;
  let d: string;
  let token: TestToken;
  let pinFile: string;
  let soPinFile: string;
  const exists = (p: string) => stat(p).then(() => true, () => false);
  const base = () => ['--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', pinFile];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'joinkeep-cli-trusted-'));
    d = join(dir, 'hsm');
    token = createTestToken('trust');
    pinFile = join(dir, 'token.pin');
    soPinFile = join(dir, 'token.so-pin');
    await writeFile(pinFile, `${token.pin}\n`, { mode: 0o600 });
    await writeFile(soPinFile, `${token.soPin}\n`, { mode: 0o600 });
    for (const k of Object.values(KEKS)) await writeFile(join(dir, `${k.label}.kek`), k.key, { mode: 0o600 });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('init --trusted-keks without an SO PIN source, or an SO PIN source without --trusted-keks / usage error (exit 2), nothing created', async () => {
    const r = await runCli(['init', '--data-dir', d, ...base(), '--trusted-keks']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--so-pin-file/);
    const s = await runCli(['init', '--data-dir', d, ...base(), '--so-pin-file', soPinFile]);
    assert.equal(s.code, 2);
    assert.match(s.stderr, /go with --trusted-keks/);
    assert.equal(await exists(d), false);
  });

  it('init --trusted-keks --so-pin-file / joinkeep.json has trustedKeks and the SO PIN file, never a PIN', async () => {
    const r = await cliOk(['init', '--data-dir', d, ...base(), '--trusted-keks', '--so-pin-file', soPinFile]);
    assert.match(r.stdout, /trusted-KEK mode/);
    const text = await readFile(join(d, 'joinkeep.json'), 'utf8');
    assert.doesNotMatch(text, new RegExp(token.pin));
    assert.doesNotMatch(text, new RegExp(token.soPin));
    const custody = JSON.parse(text).custody;
    assert.equal(custody.trustedKeks, true);
    assert.deepEqual(custody.tokens, [{ label: token.label, pinFile, soPinFile }]);
  });

  it('kek add with a wrong SO PIN / refused (exit 1) naming the token, no PIN in the output, no KEK created, none left public', async () => {
    const wrong = join(dir, 'wrong.so-pin');
    await writeFile(wrong, '99999999\n', { mode: 0o600 });
    const config = JSON.parse(await readFile(join(d, 'joinkeep.json'), 'utf8'));
    config.custody.tokens[0].soPinFile = wrong;
    await writeFile(join(d, 'joinkeep.json'), JSON.stringify(config));
    try {
      const r = await runCli(['kek', 'add', '--data-dir', d, '--label', KEKS.ns.label, '--key-file', join(dir, `${KEKS.ns.label}.kek`)]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`Security Officer PIN for token "${token.label}" is refused \\(CKR_PIN_INCORRECT\\)`));
      for (const secret of ['99999999', token.soPin, token.pin, KEKS.ns.key]) assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret));
    } finally {
      config.custody.tokens[0].soPinFile = soPinFile;
      await writeFile(join(d, 'joinkeep.json'), JSON.stringify(config));
    }
    assert.equal(keksOn(token).size, 0, 'no KEK on the token (and, checked without login, none public)');
  });

  it('kek add from key files / each KEK private, trusted, sensitive, non-extractable, WRAP/UNWRAP only; no public KEK left', async () => {
    for (const k of Object.values(KEKS)) await cliOk(['kek', 'add', '--data-dir', d, '--label', k.label, '--key-file', join(dir, `${k.label}.kek`)]);
    const keks = keksOn(token);
    assert.deepEqual([...keks.keys()].sort(), Object.values(KEKS).map((k) => `kek/${k.label}`).sort());
    for (const [label, a] of keks) assert.deepEqual(a, TRUSTED_KEK, label);
    const again = await runCli(['kek', 'add', '--data-dir', d, '--label', KEKS.ns.label, '--key-file', join(dir, `${KEKS.ns.label}.kek`)]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists/);
    assert.equal(keksOn(token).size, 3);
  });

  it('kek add --envelope / refused (exit 1) explaining an unwrapped KEK cannot be trusted; nothing changed', async () => {
    const labels = async () => (await cliJson<{ label: string; createdAt: string }[]>(['kek', 'list', '--data-dir', d])).map((k) => `${k.label} ${k.createdAt}`).sort();
    const before = await labels();
    const envelope = JSON.stringify({ KEKLabel: KEKS.import.label, AESKey: aesKeyWrap(Buffer.from(KEKS.import.key, 'hex'), Buffer.alloc(16, 0x33)).toString('hex') });
    const r = await runCli(['kek', 'add', '--data-dir', d, '--label', 'wrapped', '--envelope', envelope]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /trusted-KEK mode.*cannot unwrap under the user's KEKs, nor mark an unwrapped key afterwards.*nothing was changed/);
    assert.deepEqual(await labels(), before);
    assert.equal(keksOn(token).size, 3);
  });

  it('custody inventory shows CKA_TRUSTED=true for every KEK and CKA_WRAP_WITH_TRUSTED', async () => {
    const inv = await cliJson<{ keys: { handle: string; usage: string; attributes: Record<string, boolean> }[] }>(['custody', 'inventory', '--data-dir', d]);
    const keks = inv.keys.filter((k) => k.usage === 'kek');
    assert.equal(keks.length, 3);
    for (const k of keks) {
      assert.equal(k.attributes['CKA_TRUSTED'], true, k.handle);
      assert.equal(k.attributes['CKA_PRIVATE'], true, k.handle);
      assert.equal(typeof k.attributes['CKA_WRAP_WITH_TRUSTED'], 'boolean', k.handle);
    }
  });

  it('a join end to end / JoinAns byte for byte as the software keystore gives for vector A: accept, NwkSKey and AppSKey wrapped under the trusted KEKs', async () => {
    await writeFile(join(dir, 'ns.token'), NS_TOKEN, { mode: 0o600 });
    await writeFile(join(dir, 'as.token'), AS_TOKEN, { mode: 0o600 });
    await cliOk(['peer', 'add-ns', '--data-dir', d, '--net-id', '000013', '--token-file', join(dir, 'ns.token'), '--kek-label', KEKS.ns.label]);
    await cliOk(['peer', 'add-as', '--data-dir', d, '--as-id', 'as-1', '--token-file', join(dir, 'as.token'), '--kek-label', KEKS.as.label]);
    const appKey = JSON.stringify({ KEKLabel: KEKS.import.label, AESKey: aesKeyWrap(Buffer.from(KEKS.import.key, 'hex'), A.appKey).toString('hex') });
    await cliOk(['device', 'add', '--data-dir', d, '--dev-eui', A.devEui, '--join-eui', A.joinEui, '--mac-version', '1.0.3', '--home-net-id', '000013', '--as-id', 'as-1', '--app-key', appKey]);

    const running = await serve(d, { listen: '127.0.0.1:0', logger: pino({ level: 'silent' }) });
    try {
      const res = await fetch(running.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${NS_TOKEN}` },
        body: JSON.stringify(joinReq({ phy: A.joinRequest, devEui: A.devEui, joinEui: A.joinEui })),
      });
      const answer = (await res.json()) as Record<string, any>;
      assert.equal(resultCode(answer), 'Success', JSON.stringify(answer));
      assert.equal(answer['PHYPayload'], A.joinAccept);
      assert.deepEqual(answer['NwkSKey'], { KEKLabel: KEKS.ns.label, AESKey: A.nwkSKeyWrapped });
      assert.deepEqual(answer['AppSKey'], { KEKLabel: KEKS.as.label, AESKey: A.appSKeyWrapped });

      // `serve` forbids the Security Officer in its process: the trusted-KEK path refuses clearly.
      assert.throws(
        () => createTrustedKeks(softhsmModulePath(), [{ label: token.label, pin: token.pin, soPin: token.soPin }], 'late', Buffer.alloc(16, 1), new Date()),
        (e: unknown) => e instanceof CustodyError && e.code === 'TOKEN_UNAVAILABLE' && /joinkeep serve/.test(e.message) && !e.message.includes(token.soPin),
      );
    } finally {
      await running.stop();
    }
  });

  it('a session key derived in this mode cannot be wrapped under an untrusted KEK made the normal way on the same token / KEK_NOT_TRUSTED, and the trusted custody refuses to make one', async () => {
    const inv = await cliJson<{ keys: { handle: string; usage: string }[] }>(['custody', 'inventory', '--data-dir', d]);
    const root = inv.keys.find((k) => k.usage === 'root')!.handle;
    const plain = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: token.label, pin: token.pin }] });
    const trusted = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: token.label, pin: token.pin }], trustedKeks: true });
    try {
      await plain.importKek('untrusted', Buffer.alloc(16, 0x77));
      // Control: without CKA_WRAP_WITH_TRUSTED the same derivation wraps under it.
      await plain.deriveAndExport(root, [{ block: Buffer.alloc(16, 1), to: { kekLabel: 'untrusted' } }]);
      await assert.rejects(trusted.deriveAndExport(root, [{ block: Buffer.alloc(16, 1), to: { kekLabel: 'untrusted' } }]), (e: unknown) => {
        assert.ok(e instanceof CustodyError, String(e));
        assert.equal(e.code, 'KEK_NOT_TRUSTED', e.message);
        assert.match(e.message, /KEK "untrusted" .* is not trusted \(CKA_TRUSTED=false\)/);
        return true;
      });
      // The trusted KEK still works in the same custody, and the member was not taken out of service.
      const [ok] = await trusted.deriveAndExport(root, [{ block: Buffer.alloc(16, 1), to: { kekLabel: KEKS.ns.label } }]);
      assert.equal(ok!.key.length, 24);
      assert.deepEqual(trusted.status?.().members.map((m) => m.state), ['up']);
      await assert.rejects(trusted.importKek('user-made', Buffer.alloc(16, 2)), (e: unknown) => e instanceof CustodyError && e.code === 'KEK_NOT_TRUSTED');
      await plain.deleteKey('kek/untrusted');
    } finally {
      await plain.close();
      await trusted.close();
    }
  });

  it('a root key imported in this mode / extractable only under trusted keys: CKA_VALUE unreadable, C_WrapKey under an untrusted key refused, CKA_WRAP_WITH_TRUSTED cannot be cleared', async () => {
    const inv = await cliJson<{ keys: { handle: string; usage: string }[] }>(['custody', 'inventory', '--data-dir', d]);
    const handle = inv.keys.find((k) => k.usage === 'root')!.handle;
    inspect(token, (p, session) => {
      p.C_FindObjectsInit(session, [{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_TOKEN, value: true }, { type: K.CKA_LABEL, value: handle }]);
      const [root] = p.C_FindObjects(session, 2);
      p.C_FindObjectsFinal(session);
      assert.ok(root, handle);
      assert.deepEqual(
        [K.CKA_PRIVATE, K.CKA_SENSITIVE, K.CKA_EXTRACTABLE, K.CKA_WRAP_WITH_TRUSTED].map((type) => attr(p, session, root, type)),
        [true, true, true, true],
      );
      assert.throws(() => p.C_GetAttributeValue(session, root, [{ type: K.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/);
      // An untrusted wrapping key the user makes (a session object: nothing stays on the token).
      const untrusted = p.C_GenerateKey(session, { mechanism: K.CKM_AES_KEY_GEN }, [
        { type: K.CKA_CLASS, value: K.CKO_SECRET_KEY },
        { type: K.CKA_KEY_TYPE, value: K.CKK_AES },
        { type: K.CKA_VALUE_LEN, value: 32 },
        { type: K.CKA_TOKEN, value: false },
        { type: K.CKA_WRAP, value: true },
      ]);
      try {
        assert.throws(() => p.C_WrapKey(session, { mechanism: K.CKM_AES_KEY_WRAP }, untrusted, root, Buffer.alloc(48)), /CKR_KEY_NOT_WRAPPABLE/);
        assert.throws(() => p.C_SetAttributeValue(session, root, [{ type: K.CKA_WRAP_WITH_TRUSTED, value: false }]), /CKR_ATTRIBUTE_READ_ONLY/);
        // Nor through a copy: the copy keeps CKA_WRAP_WITH_TRUSTED.
        const copy = p.C_CopyObject(session, root, [{ type: K.CKA_TOKEN, value: false }]);
        assert.throws(() => p.C_WrapKey(session, { mechanism: K.CKM_AES_KEY_WRAP }, untrusted, copy, Buffer.alloc(48)), /CKR_KEY_NOT_WRAPPABLE/);
        p.C_DestroyObject(session, copy);
      } finally {
        p.C_DestroyObject(session, untrusted);
      }
    });
  });

  it('custody migrate --trusted-keks / refused (exit 2) with the reason', async () => {
    const r = await runCli(['custody', 'migrate', '--data-dir', d, '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', pinFile, '--trusted-keks']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cannot move into trusted-KEK mode/);
  });

  it('a pool of two tokens / kek add puts a trusted KEK on both; a wrong SO PIN on the second leaves nothing on either', async () => {
    const first = createTestToken('trust-a');
    const second = createTestToken('trust-b');
    const files: string[] = [];
    for (const [i, t] of [first, second].entries()) {
      await writeFile(join(dir, `p${i}.pin`), t.pin, { mode: 0o600 });
      await writeFile(join(dir, `p${i}.so-pin`), t.soPin, { mode: 0o600 });
      files.push('--token-label', t.label, '--pin-file', join(dir, `p${i}.pin`), '--so-pin-env', `SO_PIN_${i}`);
    }
    const pool = join(dir, 'pool');
    const env = { SO_PIN_0: first.soPin, SO_PIN_1: second.soPin };
    await cliOk(['init', '--data-dir', pool, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), ...files, '--trusted-keks'], { env });
    const bad = await runCli(['kek', 'add', '--data-dir', pool, '--label', 'pool-kek', '--key-file', join(dir, `${KEKS.ns.label}.kek`)], { env: { ...env, SO_PIN_1: '12345678' } });
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, new RegExp(`Security Officer PIN for token "${second.label}" is refused`));
    assert.equal(keksOn(first).size, 0);
    assert.equal(keksOn(second).size, 0);
    const unset = await runCli(['kek', 'add', '--data-dir', pool, '--label', 'pool-kek', '--key-file', join(dir, `${KEKS.ns.label}.kek`)], { env: { SO_PIN_0: first.soPin } });
    assert.equal(unset.code, 1);
    assert.match(unset.stderr, /Security Officer PIN of token .* comes from \$SO_PIN_1, which is not set/);
    await cliOk(['kek', 'add', '--data-dir', pool, '--label', 'pool-kek', '--key-file', join(dir, `${KEKS.ns.label}.kek`)], { env });
    for (const t of [first, second]) assert.deepEqual(Object.fromEntries(keksOn(t)), { 'kek/pool-kek': TRUSTED_KEK });
    const status = await cliJson<{ members: { state: string }[] }>(['custody', 'status', '--data-dir', pool], { env });
    assert.deepEqual(status.members.map((m) => m.state), ['up', 'up']);
  });
});
