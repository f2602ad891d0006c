import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aes128EcbEncrypt, aesCmac, aesKeyUnwrap, aesKeyWrap } from '../../src/custody/primitives.js';
import { type NetId, legacySessionKeyBlock } from '../../src/protocol/index.js';
import { cliJson, cliOk, runCli } from '../helpers/cli-run.js';
import { startServer } from '../../sim/joinkeep-server.js';
import { createTestToken, softhsmModulePath } from '../helpers/softhsm.js';
import { joinReq, joinRequestFrame, resultCode } from '../helpers/ts002.js';

/*
 * `joinkeep custody migrate` on a data directory that is already in service: afterwards the keys answer from the
 * token, the same devices keep joining (JoinNonce continues), and the database no longer holds sealed keys.
 */

const TOKEN = 'ns-token-for-migration-0123456789abcdef';
const APP_KEY = Buffer.from('2B7E151628AED2A6ABF7158809CF4F3C', 'hex'); // spec-notes §1.12 vector A
const NS_KEK = Buffer.from('000102030405060708090A0B0C0D0E0F', 'hex');
const DEV_EUI = '0004A30B001C0530';
const JOIN_EUI = '70B3D57ED0000001';

/** One join as the network server sends it; returns the JoinNonce the device reads and checks the NS key. */
async function joinOnce(url: string, devNonce: number): Promise<number> {
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(joinReq({ phy: joinRequestFrame(APP_KEY, DEV_EUI, JOIN_EUI, devNonce), devEui: DEV_EUI, joinEui: JOIN_EUI })) });
  const answer = (await res.json()) as Record<string, any>;
  assert.equal(resultCode(answer), 'Success', JSON.stringify(answer.Result));
  // As the device: decrypt (AES encrypt), check the MIC under AppKey, read JoinNonce.
  const plain = aes128EcbEncrypt(APP_KEY, Buffer.from(answer.PHYPayload, 'hex').subarray(1));
  const body = Buffer.concat([Buffer.of(0x20), plain.subarray(0, plain.length - 4)]);
  assert.deepEqual(aesCmac(APP_KEY, body).subarray(0, 4), plain.subarray(plain.length - 4));
  const joinNonce = plain.readUIntLE(0, 3);
  const nwkSKey = aes128EcbEncrypt(APP_KEY, legacySessionKeyBlock('NwkSKey', { joinNonce, netId: '000013' as NetId, devNonce }));
  assert.deepEqual(aesKeyUnwrap(NS_KEK, Buffer.from(answer.NwkSKey.AESKey, 'hex')), nwkSKey);
  return joinNonce;
}

describe('CLI / custody migrate from the software keystore to PKCS#11 (SoftHSM2)', () => {
  let dir: string;
  let dataDir: string;
  let token: ReturnType<typeof createTestToken>;
  let pinFile: string;
  let second: ReturnType<typeof createTestToken>;
  let secondPin: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'joinkeep-migrate-'));
    dataDir = join(dir, 'jk');
    token = createTestToken('migrate');
    pinFile = join(dir, 'token.pin');
    await writeFile(pinFile, token.pin, { mode: 0o600 });
    second = createTestToken('migrate-b');
    secondPin = join(dir, 'second.pin');
    await writeFile(secondPin, second.pin, { mode: 0o600 });
    const importKek = Buffer.alloc(16, 0x42);
    await writeFile(join(dir, 'import.kek'), importKek.toString('hex'));
    await writeFile(join(dir, 'ns.kek'), NS_KEK.toString('hex'));
    await writeFile(join(dir, 'ns.token'), TOKEN);
    await cliOk(['init', '--data-dir', dataDir]);
    await cliOk(['kek', 'add', '--data-dir', dataDir, '--label', 'import', '--key-file', join(dir, 'import.kek')]);
    await cliOk(['kek', 'add', '--data-dir', dataDir, '--label', 'ns-000013', '--key-file', join(dir, 'ns.kek')]);
    await cliOk(['peer', 'add-ns', '--data-dir', dataDir, '--net-id', '000013', '--token-file', join(dir, 'ns.token'), '--kek-label', 'ns-000013']);
    const envelope = JSON.stringify({ KEKLabel: 'import', AESKey: aesKeyWrap(importKek, APP_KEY).toString('hex') });
    await cliOk(['device', 'add', '--data-dir', dataDir, '--dev-eui', DEV_EUI, '--join-eui', JOIN_EUI, '--mac-version', '1.0.3', '--home-net-id', '000013', '--app-key', envelope]);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a device joins, the keys move into a pool of two tokens, the device joins again with the next JoinNonce', async () => {
    const before = await startServer(dataDir);
    try {
      assert.equal(await joinOnce(before.url, 0x1234), 1);
    } finally {
      await before.stop();
    }

    const r = await cliOk(['custody', 'migrate', '--data-dir', dataDir, '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', pinFile, '--token-label', second.label, '--pin-file', secondPin]);
    assert.match(r.stdout, /Moved 3 key\(s\)/);
    assert.match(r.stdout, /6 checked/, 'each key checked on each token');
    const inventory = await cliJson<{ keys: { handle: string; location: string }[] }>(['custody', 'inventory', '--data-dir', dataDir, '--json']);
    assert.equal(inventory.keys.length, 3);
    for (const k of inventory.keys) assert.match(k.location, /\(2 of 2\)$/, k.handle);
    const config = JSON.parse(await readFile(join(dataDir, 'joinkeep.json'), 'utf8'));
    assert.equal(config.custody.kind, 'pkcs11');
    assert.doesNotMatch(JSON.stringify(config), new RegExp(token.pin));

    const keks = await cliJson<{ label: string }[]>(['kek', 'list', '--data-dir', dataDir]);
    assert.deepEqual(keks.map((k) => k.label).sort(), ['import', 'ns-000013'], 'the KEKs now come from the token; the transport KEK is gone');
    const audit = await cliJson<{ items: { action: string }[] }>(['audit', 'list', '--data-dir', dataDir, '--action', 'custody.migrate']);
    assert.equal(audit.items.length, 1);

    const after = await startServer(dataDir);
    try {
      assert.equal(await joinOnce(after.url, 0x1235), 2);
    } finally {
      await after.stop();
    }
  });

  it('a second migrate is refused (exit 1) and changes nothing', async () => {
    const before = await readFile(join(dataDir, 'joinkeep.json'), 'utf8');
    const r = await runCli(['custody', 'migrate', '--data-dir', dataDir, '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', pinFile]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already keeps its keys in PKCS#11/);
    assert.equal(await readFile(join(dataDir, 'joinkeep.json'), 'utf8'), before);
  });
});
