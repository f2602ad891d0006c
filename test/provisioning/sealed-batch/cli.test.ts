import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { JWK } from 'jose';
import { parseTr005 } from '../../../src/protocol/index.js';
import { claimCodeHash, verifySealedBatch } from '../../../src/provisioning/sealed-batch/index.js';
import { type CliResult, runCli, tempRoot, writeSecretFile } from '../../helpers/cli-run.js';
import { type Secret, describeFindings, findSecrets } from '../../helpers/keys-search.js';
import { type Recipient, newRecipient, openBatchKey, unwrap } from '../../helpers/sealed-batch.js';

/*
 * `joinkeep batch keygen` and `joinkeep batch seal` as a maker runs them: the compiled CLI in a child process, in
 * a temporary directory. Keys must be found in the programmer file and nowhere else: not in the sealed batch, the
 * manifests, or what the command prints (hex, base64, base64url, raw bytes, JSON byte lists).
 */

interface KeyRow { devEui: string; joinEui: string; appKey: Buffer; nwkKey?: Buffer }

function parseProgrammerFile(text: string): KeyRow[] {
  const [header, ...lines] = text.trim().split('\r\n');
  assert.equal(header, 'devEui,joinEui,appKey,nwkKey');
  return lines.map((l) => {
    const [devEui, joinEui, appKey, nwkKey] = l.split(',');
    return { devEui: devEui!, joinEui: joinEui!, appKey: Buffer.from(appKey!, 'hex'), ...(nwkKey ? { nwkKey: Buffer.from(nwkKey, 'hex') } : {}) };
  });
}

function secretsOf(rows: readonly KeyRow[]): Secret[] {
  return rows.flatMap((r) => [{ name: `AppKey of ${r.devEui}`, bytes: r.appKey }, ...(r.nwkKey ? [{ name: `NwkKey of ${r.devEui}`, bytes: r.nwkKey }] : [])]);
}

function assertOk(r: CliResult): void {
  assert.equal(r.code, 0, `joinkeep ${r.args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

function assertUsage(r: CliResult, message: RegExp): void {
  assert.equal(r.code, 2, `expected a usage error (exit 2), got ${r.code}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stdout, '');
}

describe('cli / joinkeep batch keygen and batch seal, end to end', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let recipient: Recipient;
  let recipientFile: string;
  let makerPublic: JWK;
  const at = (name: string) => join(root, name);
  const registry = async (kid: string) => (kid === makerPublic.kid ? { name: 'acme-sensors', jwk: makerPublic } : undefined);

  before(async () => {
    ({ root, cleanup } = await tempRoot('joinkeep-batch-'));
    recipient = await newRecipient();
    recipientFile = at('joinkeep-receiving.jwk');
    await writeFile(recipientFile, JSON.stringify(recipient.publicJwk));
  });
  after(() => cleanup());

  const seal = (...args: string[]) => runCli(['batch', 'seal', '--recipient', recipientFile, '--signing-key', at('maker.jwk'), '--maker', 'acme-sensors', ...args]);

  it('--help lists batch keygen and batch seal', async () => {
    const r = await runCli(['batch', '--help']);
    assertOk(r);
    assert.match(r.stdout, /keygen/);
    assert.match(r.stdout, /seal/);
  });

  it('keygen / a private JWK with mode 0600 and a public JWK; the private key is never printed', async () => {
    const r = await runCli(['batch', 'keygen', '--out-private', at('maker.jwk'), '--out-public', at('maker.pub.jwk'), '--json']);
    assertOk(r);
    const printed = JSON.parse(r.stdout) as { alg: string; kid: string };
    const priv = JSON.parse(await readFile(at('maker.jwk'), 'utf8')) as JWK;
    makerPublic = JSON.parse(await readFile(at('maker.pub.jwk'), 'utf8')) as JWK;
    assert.equal(printed.alg, 'ES256');
    assert.equal(printed.kid, makerPublic.kid);
    assert.equal(typeof priv.d, 'string');
    assert.equal(makerPublic.d, undefined);
    assert.equal((await stat(at('maker.jwk'))).mode & 0o777, 0o600);
    assert.doesNotMatch(r.stdout + r.stderr, new RegExp(priv.d!));
  });

  it('keygen / refuses to overwrite an existing key file (exit 1), EdDSA on request', async () => {
    const before = await readFile(at('maker.jwk'), 'utf8');
    const r = await runCli(['batch', 'keygen', '--out-private', at('maker.jwk'), '--out-public', at('other.pub.jwk'), '--alg', 'EdDSA']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /maker\.jwk already exists; refusing to overwrite it/);
    assert.equal(await readFile(at('maker.jwk'), 'utf8'), before);
    assert.equal(existsSync(at('other.pub.jwk')), false);
    assertOk(await runCli(['batch', 'keygen', '--out-private', at('ed.jwk'), '--out-public', at('ed.pub.jwk'), '--alg', 'EdDSA']));
    assert.equal((JSON.parse(await readFile(at('ed.pub.jwk'), 'utf8')) as JWK).crv, 'Ed25519');
  });

  it('seal --generate / keys only in the programmer file; the batch opens to the same keys; claim codes match their hashes', async () => {
    const r = await seal('--generate', '40', '--dev-eui-start', '70B3D57ED0000001', '--join-eui', '70B3D57ED0000000', '--mac-version', '1.1', '--profile', 'acme-th-v2',
      '--qr-profile-id', 'A1B2C3D4', '--out', at('gen.batch.json'), '--manifest', at('gen.manifest.csv'), '--manifest-json', at('gen.manifest.json'), '--programmer-file', at('gen.programmer.csv'), '--json');
    assertOk(r);
    for (const f of ['gen.batch.json', 'gen.manifest.csv', 'gen.manifest.json', 'gen.programmer.csv']) assert.equal((await stat(at(f))).mode & 0o777, 0o600, f);

    const programmer = await readFile(at('gen.programmer.csv'), 'utf8');
    const keys = parseProgrammerFile(programmer);
    assert.equal(keys.length, 40);
    const secrets = secretsOf(keys);
    assert.equal(secrets.length, 80);
    for (const f of ['gen.batch.json', 'gen.manifest.csv', 'gen.manifest.json']) {
      const findings = findSecrets(await readFile(at(f)), secrets, f);
      assert.equal(findings.length, 0, describeFindings(findings));
    }
    assert.equal(findSecrets(r.stdout + r.stderr, secrets, 'output').length, 0);
    assert.equal(findSecrets(programmer, secrets, 'programmer file').filter((f) => f.encoding === 'hex-upper').length, 80, 'every key is in the programmer file');

    const { payload } = await verifySealedBatch(await readFile(at('gen.batch.json')), registry);
    assert.ok(payload.kind === 'device-keys');
    assert.equal(payload.batchKey.alg, 'RSA-OAEP-256');
    assert.equal((JSON.parse(r.stdout) as { batchId: string }).batchId, payload.batchId);
    const batchKey = openBatchKey(recipient, payload.batchKey);
    payload.devices.forEach((d, i) => {
      assert.equal(d.devEui, keys[i]!.devEui);
      assert.deepEqual(unwrap(batchKey, d.appKey), keys[i]!.appKey);
      assert.deepEqual(unwrap(batchKey, d.nwkKey!), keys[i]!.nwkKey);
      assert.equal(d.profile, 'acme-th-v2');
    });

    const manifest = JSON.parse(await readFile(at('gen.manifest.json'), 'utf8')) as { batchId: string; devices: { devEui: string; claimCode: string; qr: string }[] };
    assert.equal(manifest.batchId, payload.batchId);
    manifest.devices.forEach((m, i) => {
      assert.equal(claimCodeHash(m.devEui, m.claimCode), payload.devices[i]!.claimCodeHash);
      const qr = parseTr005(m.qr);
      assert.equal(qr.devEui, m.devEui);
      assert.equal(qr.profileId, 'A1B2C3D4');
      assert.equal(qr.ownerToken, m.claimCode.replace(/-/g, ''));
    });
    const csv = (await readFile(at('gen.manifest.csv'), 'utf8')).split('\r\n');
    assert.equal(csv[0], 'devEui,joinEui,macVersion,serialNumber,profile,claimCode,qr');
    assert.equal(csv.length, 42);
  });

  it('seal --input (factory CSV) with --oaep sha1 / keys from the file, in no output; no programmer file', async () => {
    const factory = [
      'DevEUI,AppEUI,MAC version,AppKey,NwkKey,Serial number,line station',
      '0004A30B001C0530,70B3D57ED0000000,1.0.3,2B7E151628AED2A6ABF7158809CF4F3C,,SN-0530,3',
      '0004A30B001C0531,70B3D57ED0000000,1.1,000102030405060708090A0B0C0D0E0F,F0E0D0C0B0A090807060504030201000,SN-0531,4',
    ].join('\n');
    const input = await writeSecretFile(root, 'factory.csv', factory);
    const r = await seal('--input', input, '--oaep', 'sha1', '--out', at('in.batch.json'), '--manifest', at('in.manifest.csv'));
    assertOk(r);
    assert.match(r.stderr, /warning: ignored input columns: line station/);
    const secrets = secretsOf(parseProgrammerFile(['devEui,joinEui,appKey,nwkKey', ...factory.split('\n').slice(1).map((l) => l.split(',').slice(0, 5).filter((_, i) => i !== 2).join(','))].join('\r\n')));
    assert.equal(secrets.length, 3);
    for (const f of ['in.batch.json', 'in.manifest.csv']) assert.equal(findSecrets(await readFile(at(f)), secrets, f).length, 0, f);
    assert.equal(findSecrets(r.stdout + r.stderr, secrets, 'output').length, 0);
    const { payload } = await verifySealedBatch(await readFile(at('in.batch.json')), registry);
    assert.ok(payload.kind === 'device-keys');
    assert.equal(payload.batchKey.alg, 'RSA-OAEP');
    const batchKey = openBatchKey(recipient, payload.batchKey);
    assert.deepEqual(unwrap(batchKey, payload.devices[1]!.nwkKey!), secrets[2]!.bytes);
    assert.equal(payload.devices[0]!.serialNumber, 'SN-0530');
  });

  it('seal refuses, as usage errors and before writing anything: --generate without --programmer-file, --input with one, --input and --generate', async () => {
    const before = await readdir(root);
    const gen = ['--generate', '2', '--dev-eui-start', '70B3D57ED0000100', '--join-eui', '70B3D57ED0000000', '--mac-version', '1.0.3'];
    assertUsage(await seal(...gen, '--out', at('x.json'), '--manifest', at('x.csv')), /generated keys must go to a programmer file/);
    assertUsage(await seal('--input', at('factory.csv'), '--out', at('x.json'), '--manifest', at('x.csv'), '--programmer-file', at('x.prog')), /no programmer file is written/);
    assertUsage(await seal('--input', at('factory.csv'), ...gen, '--out', at('x.json'), '--manifest', at('x.csv')), /--input or --generate, not both/);
    assertUsage(await seal('--generate', '2', '--out', at('x.json'), '--manifest', at('x.csv')), /--generate needs --dev-eui-start, --join-eui and --mac-version/);
    assertUsage(await seal(...gen, '--out', at('x.json'), '--programmer-file', at('x.prog')), /a manifest \(CSV or JSON\) is required/);
    // commander's own argument check (exit 1, like its other option errors)
    const md5 = await seal(...gen, '--oaep', 'md5', '--out', at('x.json'));
    assert.equal(md5.code, 1);
    assert.match(md5.stderr, /'md5' is invalid\. expected one of sha1, sha256/);
    assert.deepEqual(await readdir(root), before);
  });

  it('seal refuses to overwrite any output, and writes none of the others', async () => {
    const r = await seal('--input', at('factory.csv'), '--out', at('fresh.json'), '--manifest', at('in.manifest.csv'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /in\.manifest\.csv already exists/);
    assert.equal(existsSync(at('fresh.json')), false);
  });

  it('seal refuses a factory file with a duplicate DevEUI, naming the line', async () => {
    const input = await writeSecretFile(root, 'dup.csv', 'devEui,joinEui,macVersion,appKey\n0004A30B001C0530,70B3D57ED0000000,1.0.3,2B7E151628AED2A6ABF7158809CF4F3C\n0004a30b001c0530,70B3D57ED0000000,1.0.3,2B7E151628AED2A6ABF7158809CF4F3D\n');
    const r = await seal('--input', input, '--out', at('dup.json'), '--manifest', at('dup.csv.out'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /line 3: DevEUI 0004A30B001C0530 is already on line 2/);
    assert.doesNotMatch(r.stderr, /2B7E1516/i);
    assert.equal(existsSync(at('dup.json')), false);
  });

  it('seal --kind derivation-master / the master key sealed alone, readable only with the receiving key', async () => {
    const master = '8E73B0F7DA0E6452C810F32B809079E5';
    const file = await writeSecretFile(root, 'master.hex', `${master}\n`);
    const r = await seal('--kind', 'derivation-master', '--master-key-file', file, '--master-key-id', 'se-2026-a', '--out', at('master.batch.json'));
    assertOk(r);
    const bytes = await readFile(at('master.batch.json'));
    assert.equal(findSecrets(bytes, [{ name: 'master key', bytes: Buffer.from(master, 'hex') }], 'batch').length, 0);
    const { payload } = await verifySealedBatch(bytes, registry);
    assert.ok(payload.kind === 'derivation-master');
    assert.deepEqual(unwrap(openBatchKey(recipient, payload.batchKey), payload.derivationMaster.wrappedKey).toString('hex').toUpperCase(), master);
    assertUsage(await seal('--kind', 'derivation-master', '--master-key-file', file, '--out', at('m2.json')), /--master-key-file and --master-key-id/);
  });

  it('seal --kind derived / identities and claim codes only, no keys anywhere', async () => {
    const r = await seal('--kind', 'derived', '--derived-from', 'se-2026-a', '--generate', '5', '--dev-eui-start', '0004A30B00000001', '--join-eui', '70B3D57ED0000000', '--mac-version', '1.1', '--out', at('derived.batch.json'), '--manifest-json', at('derived.manifest.json'));
    assertOk(r);
    const { payload } = await verifySealedBatch(await readFile(at('derived.batch.json')), registry);
    assert.ok(payload.kind === 'derived');
    assert.equal(payload.derivedFrom, 'se-2026-a');
    assert.equal(payload.deviceCount, 5);
    assert.ok(payload.devices.every((d) => !('appKey' in d) && !('nwkKey' in d) && d.claimCodeHash !== undefined));
    assertUsage(await seal('--kind', 'derived', '--derived-from', 'x', '--generate', '1', '--dev-eui-start', '0004A30B00000100', '--join-eui', '70B3D57ED0000000', '--mac-version', '1.1', '--out', at('d2.json'), '--manifest', at('d2.csv'), '--programmer-file', at('d2.prog')), /no programmer file/);
  });
});
