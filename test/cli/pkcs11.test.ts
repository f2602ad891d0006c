import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aesKeyWrap } from '../../src/custody/primitives.js';
import { cliJson, cliOk, runCli } from '../helpers/cli-run.js';
import { createTestToken, softhsmModulePath } from '../helpers/softhsm.js';

/*
 * A data directory whose keys live in an HSM (SoftHSM2 over PKCS#11), driven through the CLI as an operator does:
 * PINs come from files or environment variables, never the command line, and every other command works unchanged.
 */

const APP_KEY_HEX = '2B7E151628AED2A6ABF7158809CF4F3C';

describe('CLI / PKCS#11 data directory (SoftHSM2)', () => {
  let dir: string;
  let token: ReturnType<typeof createTestToken>;
  let pinFile: string;
  const exists = (p: string) => stat(p).then(() => true, () => false);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'joinkeep-cli-pkcs11-'));
    token = createTestToken('cli');
    pinFile = join(dir, 'token.pin');
    await writeFile(pinFile, `${token.pin}\n`, { mode: 0o600 });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('init with --custody pkcs11 but no module / usage error (exit 2), nothing created', async () => {
    const d = join(dir, 'no-module');
    const r = await runCli(['init', '--data-dir', d, '--custody', 'pkcs11', '--token-label', token.label, '--pin-file', pinFile]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--pkcs11-module/);
    assert.equal(await exists(d), false);
  });

  it('init with a token label but no PIN source / usage error (exit 2), nothing created', async () => {
    const d = join(dir, 'no-pin');
    const r = await runCli(['init', '--data-dir', d, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', token.label]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--pin-file/);
    assert.equal(await exists(d), false);
  });

  it('init with a wrong PIN / refused (exit 1), no data directory left behind', async () => {
    const d = join(dir, 'wrong-pin');
    const wrong = join(dir, 'wrong.pin');
    await writeFile(wrong, '000000\n', { mode: 0o600 });
    const r = await runCli(['init', '--data-dir', d, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', wrong]);
    assert.equal(r.code, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /000000/);
    assert.equal(await exists(d), false);
  });

  it('init, kek add, peer add-ns, device add and device show work unchanged; no master key, no PIN in the config', async () => {
    const d = join(dir, 'hsm');
    await cliOk(['init', '--data-dir', d, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', pinFile]);
    assert.equal(await exists(join(d, 'master.key')), false, 'an HSM data directory has no master key file');
    const config = await readFile(join(d, 'joinkeep.json'), 'utf8');
    assert.doesNotMatch(config, new RegExp(token.pin));
    assert.equal(JSON.parse(config).custody.kind, 'pkcs11');

    const importKek = Buffer.from('000102030405060708090A0B0C0D0E0F', 'hex');
    await writeFile(join(dir, 'import.kek'), importKek.toString('hex'));
    await writeFile(join(dir, 'ns.token'), 'ns-token-for-the-hsm-test-0123456789');
    await cliOk(['kek', 'add', '--data-dir', d, '--label', 'import', '--key-file', join(dir, 'import.kek')]);
    await cliOk(['kek', 'add', '--data-dir', d, '--label', 'ns-000013', '--key-file', join(dir, 'import.kek')]);
    await cliOk(['peer', 'add-ns', '--data-dir', d, '--net-id', '000013', '--token-file', join(dir, 'ns.token'), '--kek-label', 'ns-000013']);
    const appKey = Buffer.from(APP_KEY_HEX, 'hex');
    const envelope = JSON.stringify({ KEKLabel: 'import', AESKey: aesKeyWrap(importKek, appKey).toString('hex') });
    await cliOk(['device', 'add', '--data-dir', d, '--dev-eui', '0004A30B001C0530', '--join-eui', '70B3D57ED0000001', '--mac-version', '1.0.3', '--home-net-id', '000013', '--app-key', envelope]);
    const keks = await cliJson<{ label: string }[]>(['kek', 'list', '--data-dir', d]);
    assert.deepEqual(keks.map((k) => k.label).sort(), ['import', 'ns-000013']);
    const device = await cliJson<{ devEui: string; joinState: { lastJoinNonce: number } }>(['device', 'show', '--data-dir', d, '--dev-eui', '0004A30B001C0530']);
    assert.equal(device.joinState.lastJoinNonce, 0);

    // The inventory reads the token: every root key and KEK sensitive and never extractable; no value anywhere.
    const inventory = await cliOk(['custody', 'inventory', '--data-dir', d, '--json']);
    assert.doesNotMatch(inventory.stdout, new RegExp(APP_KEY_HEX, 'i'));
    assert.doesNotMatch(inventory.stdout, new RegExp(importKek.toString('hex'), 'i'));
    const inv = JSON.parse(inventory.stdout) as { custody: string; keys: { handle: string; usage: string; location: string; attributes: Record<string, boolean> }[] };
    assert.equal(inv.custody, 'pkcs11');
    assert.deepEqual(inv.keys.map((k) => k.usage).sort(), ['kek', 'kek', 'root']);
    for (const k of inv.keys) {
      assert.match(k.location, new RegExp(`PKCS#11 token "${token.label}"`));
      assert.equal(k.attributes['CKA_SENSITIVE'], true, k.handle);
      assert.equal(k.attributes['CKA_EXTRACTABLE'], false, k.handle);
      // PKCS#11: a key that entered by C_UnwrapKey or C_CreateObject existed outside the token once, so the token
      // reports CKA_NEVER_EXTRACTABLE=false for it; the inventory shows that as it is.
      assert.equal(typeof k.attributes['CKA_NEVER_EXTRACTABLE'], 'boolean', k.handle);
      assert.equal(k.attributes['CKA_WRAP'], k.usage === 'kek', k.handle);
      assert.equal(k.attributes['CKA_SIGN'], k.usage === 'root', k.handle);
    }
  });

  it('the PIN may come from an environment variable instead of a file', async () => {
    const d = join(dir, 'hsm-env');
    await cliOk(['init', '--data-dir', d, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-env', 'HSM_PIN'], { env: { HSM_PIN: token.pin } });
    const r = await runCli(['kek', 'list', '--data-dir', d]);
    assert.equal(r.code, 1, 'without the variable the token cannot be opened');
    assert.match(r.stderr, /HSM_PIN/);
    await cliOk(['kek', 'list', '--data-dir', d], { env: { HSM_PIN: token.pin } });
  });

  it('a pool of two tokens: init checks both, kek add stores on both, custody status and inventory show both', async () => {
    const d = join(dir, 'pool');
    const first = createTestToken('cli-a');
    const firstPin = join(dir, 'first.pin');
    await writeFile(firstPin, `${first.pin}\n`, { mode: 0o600 });
    const second = createTestToken('cli-b');
    const secondPin = join(dir, 'second.pin');
    await writeFile(secondPin, `${second.pin}\n`, { mode: 0o600 });
    const bad = await runCli(['init', '--data-dir', d, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', first.label, '--pin-file', firstPin, '--token-label', 'no-such-token', '--pin-file', secondPin]);
    assert.equal(bad.code, 1, 'a pool is created whole: a token that does not open fails init');
    assert.match(bad.stderr, /no-such-token/);
    assert.equal(await exists(d), false);

    await cliOk(['init', '--data-dir', d, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', first.label, '--pin-file', firstPin, '--token-label', second.label, '--pin-file', secondPin]);
    assert.deepEqual(JSON.parse(await readFile(join(d, 'joinkeep.json'), 'utf8')).custody.tokens.map((t: { label: string }) => t.label), [first.label, second.label]);
    await writeFile(join(dir, 'pool.kek'), Buffer.alloc(16, 0x5a).toString('hex'));
    await cliOk(['kek', 'add', '--data-dir', d, '--label', 'pool-kek', '--key-file', join(dir, 'pool.kek')]);

    const status = await cliJson<{ custody: string; members: { member: string; state: string }[] }>(['custody', 'status', '--data-dir', d, '--json']);
    assert.deepEqual(status.members.map((m) => [m.member, m.state]), [[first.label, 'up'], [second.label, 'up']]);
    const inv = await cliJson<{ keys: { handle: string; location: string }[] }>(['custody', 'inventory', '--data-dir', d, '--json']);
    const kek = inv.keys.find((k) => k.handle === 'kek/pool-kek');
    assert.ok(kek);
    assert.equal(kek.location, `PKCS#11 tokens "${first.label}", "${second.label}" (2 of 2)`);

    // Tokens that do not hold the same keys are not a pool: init names what one lacks.
    const mixed = await runCli(['init', '--data-dir', join(dir, 'mixed'), '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', first.label, '--pin-file', firstPin, '--token-label', token.label, '--pin-file', pinFile]);
    assert.equal(mixed.code, 1);
    assert.match(mixed.stderr, /is inconsistent: lacks \d+ key\(s\) other members hold/);
  });
});
