import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportJWK } from 'jose';
import { type MacVersion, devAddrFromLeBytes, netIdFromBeHex } from '../../src/protocol/index.js';
import { SimulatedDevice } from '../../sim/device.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { NetworkServerClient } from '../../sim/network-server.js';
import { type Programmed, programmerFile } from '../helpers/programmer-file.js';
import { type CliResult, cliJson, cliOk, runCli, tempRoot, writeSecretFile } from '../helpers/cli-run.js';
import { type Secret, describeFindings, findSecrets } from '../helpers/keys-search.js';
import { createTestToken, softhsmModulePath } from '../helpers/softhsm.js';

/*
 * Personalization end to end, as a new maker and an operator would do it, through the CLI and the REST API only:
 * Joinkeep creates its receiving key, the maker creates a signing key and is registered, the maker seals a batch of
 * 1,000 devices with `joinkeep batch seal` (keys generated at the "factory", the programmer file the only place they
 * exist in clear), Joinkeep imports it, a sample is bound and activated with simulated devices through a real NS
 * client. Every tampering is refused and changes nothing; no key appears in clear in any file Joinkeep or the
 * sealing tool wrote, except the programmer file. Runs on the software keystore and on SoftHSM2.
 */

const JOIN_EUI = '70B3D57ED00100FF';
const HOME_NET = '000013';


/** Every file under `dir`, recursively, with its bytes. */
async function filesUnder(dir: string): Promise<{ where: string; bytes: Buffer }[]> {
  const out: { where: string; bytes: Buffer }[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) {
      const path = join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name);
      out.push({ where: path, bytes: await readFile(path) });
    }
  }
  return out;
}

const refusedWith = (r: CliResult, code: string): void => {
  assert.equal(r.code, 1, `expected a refusal (exit 1), got ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, new RegExp(code === 'BATCH_CONFLICT' ? 'already known' : '.'), r.stderr);
};

for (const custody of ['software', 'pkcs11'] as const) {
  describe(`sealed batch end to end / ${custody === 'pkcs11' ? 'SoftHSM2' : 'software keystore'}`, { timeout: 600_000 }, () => {
    let root: Awaited<ReturnType<typeof tempRoot>>;
    let dd: string[];
    const file = (name: string) => join(root.root, name);
    // SoftHSM2 2.6.1 unwraps with RSA-OAEP SHA-1 only (spec-notes §9.1); the software keystore takes either.
    const oaep = custody === 'pkcs11' ? 'sha1' : 'sha256';
    let devices: Programmed[] = [];
    let inventoryCount: () => Promise<number>;
    let auditCount: () => Promise<number>;

    before(async () => {
      root = await tempRoot('joinkeep-batch-e2e-');
      dd = ['--data-dir', root.dataDir];
      if (custody === 'pkcs11') {
        const token = createTestToken('batch');
        const pinFile = await writeSecretFile(root.root, 'token.pin', `${token.pin}\n`);
        await cliOk(['init', ...dd, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', pinFile]);
      } else {
        await cliOk(['init', ...dd]);
      }
      await cliOk(['receiving-key', 'create', ...dd]);
      await cliOk(['receiving-key', 'show', ...dd, '--out', file('joinkeep.jwk')]);
      const published = JSON.parse(await readFile(file('joinkeep.jwk'), 'utf8')) as { alg: string; kty: string; d?: string };
      assert.equal(published.kty, 'RSA');
      assert.equal(published.d, undefined, 'the public half only');
      // SoftHSM2 2.6.1 unwraps RSA-OAEP with SHA-1 only: the published key says so, and makers' tools follow it.
      assert.equal(published.alg, custody === 'pkcs11' ? 'RSA-OAEP' : 'RSA-OAEP-256');
      await cliOk(['batch', 'keygen', '--out-private', file('acme.private.jwk'), '--out-public', file('acme.public.jwk')]);
      await cliOk(['maker', 'add', ...dd, '--name', 'acme', '--public-key', file('acme.public.jwk')]);
      inventoryCount = async () => {
        let n = 0;
        for (let after: string | undefined; ; ) {
          const page = await cliJson<{ items: unknown[]; next?: string }>(['inventory', 'list', ...dd, '--limit', '1000', ...(after ? ['--after', after] : [])]);
          n += page.items.length;
          if (!page.next) return n;
          after = page.next;
        }
      };
      auditCount = async () => {
        let n = 0;
        for (let after: string | undefined; ; ) {
          const page = await cliJson<{ items: unknown[]; next?: string }>(['audit', 'list', ...dd, '--limit', '1000', ...(after ? ['--after', after] : [])]);
          n += page.items.length;
          if (!page.next) return n;
          after = page.next;
        }
      };
      // The factory: 1,000 LoRaWAN 1.0.3 devices and 20 LoRaWAN 1.1 devices, keys generated here.
      const seal = (name: string, n: number, start: string, mac: MacVersion) =>
        cliOk([
          'batch', 'seal', '--recipient', file('joinkeep.jwk'), '--signing-key', file('acme.private.jwk'), '--maker', 'acme',
          // No --oaep: the tool takes the hash from the JWK's alg, which says what this custody can unwrap.
          '--generate', String(n), '--dev-eui-start', start, '--join-eui', JOIN_EUI, '--mac-version', mac,
          '--out', file(`${name}.json`), '--manifest', file(`${name}.manifest.csv`), '--programmer-file', file(`${name}.programmer.csv`),
        ]);
      await seal('batch-103', 1000, '70B3D57ED0010000', '1.0.3');
      await seal('batch-11', 20, '70B3D57ED0020000', '1.1');
      devices = [...(await programmerFile(file('batch-103.programmer.csv'))), ...(await programmerFile(file('batch-11.programmer.csv')))];
      assert.equal(devices.length, 1020);
    });
    after(async () => {
      await root.cleanup();
    });

    it('tampered, wrongly addressed, unknown-maker and truncated batches / each refused, nothing imported', async () => {
      const original = await readFile(file('batch-103.json'), 'utf8');
      const envelope = JSON.parse(original) as { protected: string; payload: string; signature: string };
      // A byte of the signed payload changed (a DevEUI's last hex digit).
      const payload = Buffer.from(envelope.payload, 'base64url').toString('utf8').replace('70B3D57ED0010001', '70B3D57ED0010F01');
      await writeFile(file('tampered.json'), JSON.stringify({ ...envelope, payload: Buffer.from(payload).toString('base64url') }));
      // Sealed by acme, but to another Join Server's receiving key.
      const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
      await writeFile(file('other-js.jwk'), JSON.stringify({ ...(await exportJWK(other.publicKey)), alg: 'RSA-OAEP-256', use: 'enc' }));
      await cliOk(['batch', 'seal', '--recipient', file('other-js.jwk'), '--signing-key', file('acme.private.jwk'), '--maker', 'acme', '--generate', '3', '--dev-eui-start', '70B3D57ED0030000', '--join-eui', JOIN_EUI, '--mac-version', '1.0.3', '--out', file('wrong-recipient.json'), '--manifest', file('wr.csv'), '--programmer-file', file('wr.prog.csv')]);
      // Signed by a maker Joinkeep does not know.
      await cliOk(['batch', 'keygen', '--out-private', file('mallory.private.jwk'), '--out-public', file('mallory.public.jwk')]);
      await cliOk(['batch', 'seal', '--recipient', file('joinkeep.jwk'), '--signing-key', file('mallory.private.jwk'), '--maker', 'acme', '--generate', '3', '--dev-eui-start', '70B3D57ED0040000', '--join-eui', JOIN_EUI, '--mac-version', '1.0.3', '--oaep', oaep, '--out', file('unknown-maker.json'), '--manifest', file('um.csv'), '--programmer-file', file('um.prog.csv')]);
      await writeFile(file('truncated.json'), original.slice(0, Math.floor(original.length / 2)));

      const auditBefore = await auditCount();
      for (const [name, expected] of [
        ['tampered.json', /signature/i],
        ['wrong-recipient.json', /receiving key/i],
        ['unknown-maker.json', /not registered/i],
        ['truncated.json', /./],
      ] as const) {
        const r = await runCli(['batch', 'import', file(name), ...dd]);
        assert.equal(r.code, 1, `${name}: ${r.stderr}`);
        assert.match(r.stderr, expected, `${name}: ${r.stderr}`);
        assert.equal(await inventoryCount(), 0, `${name}: nothing imported`);
      }
      assert.equal(await auditCount(), auditBefore, 'refusals change nothing, not even the audit trail');
      const keys = await cliJson<unknown[]>(['custody', 'inventory', ...dd]).catch(() => []);
      assert.ok(!JSON.stringify(keys).includes('root/'), 'no root key entered custody');
    });

    it('import / 1,020 devices in the maker\'s inventory; the same batch again is refused and changes nothing', async () => {
      const r = await cliJson<{ batchId: string; maker: string; devices: number }>(['batch', 'import', file('batch-103.json'), ...dd]);
      assert.equal(r.devices, 1000);
      assert.equal(r.maker, 'acme');
      await cliOk(['batch', 'import', file('batch-11.json'), ...dd]);
      assert.equal(await inventoryCount(), 1020);
      const auditBefore = await auditCount();
      const again = await runCli(['batch', 'import', file('batch-103.json'), ...dd]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /already imported/);
      assert.equal(await inventoryCount(), 1020);
      assert.equal(await auditCount(), auditBefore);
    });

    it('a new batch with one DevEUI already imported / refused with that DevEUI named, nothing imported', async () => {
      const one = devices[7]!;
      await writeFile(file('clash.csv'), `devEui,joinEui,macVersion,appKey\n70B3D57ED0050000,${JOIN_EUI},1.0.3,${randomBytes(16).toString('hex')}\n${one.devEui},${JOIN_EUI},1.0.3,${randomBytes(16).toString('hex')}\n`);
      await cliOk(['batch', 'seal', '--recipient', file('joinkeep.jwk'), '--signing-key', file('acme.private.jwk'), '--maker', 'acme', '--input', file('clash.csv'), '--oaep', oaep, '--out', file('clash.json'), '--manifest', file('clash.manifest.csv')]);
      const r = await runCli(['batch', 'import', file('clash.json'), ...dd]);
      refusedWith(r, 'BATCH_CONFLICT');
      assert.match(r.stderr, /already known/);
      assert.match(r.stderr, new RegExp(one.devEui), 'the report names the conflicting DevEUI');
      assert.doesNotMatch(r.stderr, /70B3D57ED0050000/, 'and only it');
      assert.equal(await inventoryCount(), 1020);
      const probe = await runCli(['inventory', 'show', ...dd, '--dev-eui', '70B3D57ED0050000']);
      assert.equal(probe.code, 1, 'the other device of the refused batch was not imported');
    });

    it('a sample bound to a home network / joins through a real NS client; device and NS agree on the keys', async () => {
      const kek = randomBytes(16);
      await writeFile(file('ns.kek'), kek.toString('hex'));
      const token = randomBytes(24).toString('hex');
      await writeFile(file('ns.token'), token);
      await cliOk(['kek', 'add', ...dd, '--label', 'ns-000013', '--key-file', file('ns.kek')]);
      await cliOk(['peer', 'add-ns', ...dd, '--net-id', HOME_NET, '--token-file', file('ns.token'), '--kek-label', 'ns-000013']);
      const sample = [devices[0]!, devices[499]!, devices[999]!, devices[1000]!, devices[1019]!];
      await cliOk(['device', 'bind', ...dd, '--dev-eui', sample.map((d) => d.devEui).join(','), '--home-net-id', HOME_NET]);
      const notBound = devices[1]!;
      let server: RunningServer | undefined;
      try {
        server = await startServer(root.dataDir);
        const ns = new NetworkServerClient({ url: server.url, token, netId: netIdFromBeHex(HOME_NET), kek: { label: 'ns-000013', key: kek }, style: 'tts' });
        for (const [i, d] of sample.entries()) {
          const macVersion: MacVersion = d.nwkKey ? '1.1' : '1.0.3';
          const device = new SimulatedDevice({ devEui: d.devEui, joinEui: d.joinEui, macVersion, roots: { appKey: d.appKey, nwkKey: d.nwkKey } });
          const ans = await ns.joinReq({ phyPayload: device.joinRequest(), devEui: d.devEui, joinEui: d.joinEui, macVersion, devAddr: devAddrFromLeBytes(Buffer.of(i, 0, 0, 1)), dlSettings: macVersion === '1.1' ? 0x80 : 0x00, rxDelay: 1 });
          assert.ok(ans.ok, `${d.devEui}: ${JSON.stringify(ans)}`);
          const outcome = device.receiveJoinAccept(ans.phyPayload);
          assert.ok(outcome.accepted, `${d.devEui}: ${JSON.stringify(outcome)}`);
          const nsKey = ans.nsKeys.scheme === 'legacy' ? ans.nsKeys.nwkSKey : ans.nsKeys.fNwkSIntKey;
          const devKey = outcome.keys.scheme === 'legacy' ? outcome.keys.nwkSKey : outcome.keys.fNwkSIntKey;
          assert.ok(nsKey.equals(devKey), `${d.devEui}: the NS and the device derived the same network key`);
        }
        // A device still in the inventory (not claimed or bound) cannot be activated by anyone.
        const device = new SimulatedDevice({ devEui: notBound.devEui, joinEui: notBound.joinEui, macVersion: '1.0.3', roots: { appKey: notBound.appKey } });
        const ans = await ns.joinReq({ phyPayload: device.joinRequest(), devEui: notBound.devEui, joinEui: notBound.joinEui, macVersion: '1.0.3', devAddr: devAddrFromLeBytes(Buffer.of(9, 9, 0, 1)), dlSettings: 0, rxDelay: 1 });
        assert.equal(ans.ok, false);
        assert.ok(!ans.ok && ans.kind === 'result' && ans.resultCode === 'UnknownDevEUI', JSON.stringify(ans));
      } finally {
        await server?.stop();
      }
    });

    it('the REST API / serves the receiving key and imports a batch with an operator key; a replay is a 409 problem; another organisation\'s key is refused', async () => {
      await cliOk(['batch', 'seal', '--recipient', file('joinkeep.jwk'), '--signing-key', file('acme.private.jwk'), '--maker', 'acme', '--generate', '10', '--dev-eui-start', '70B3D57ED0060000', '--join-eui', JOIN_EUI, '--mac-version', '1.0.4', '--oaep', oaep, '--out', file('api.json'), '--manifest', file('api.csv'), '--programmer-file', file('api.prog.csv')]);
      devices.push(...(await programmerFile(file('api.prog.csv'))));
      let server: RunningServer | undefined;
      try {
        server = await startServer(root.dataDir, { api: true });
        const api = `${server.apiUrl!}/api/v1`;
        const jwk = (await (await fetch(`${api}/receiving-key`)).json()) as Record<string, unknown>;
        assert.deepEqual(jwk, JSON.parse(await readFile(file('joinkeep.jwk'), 'utf8')));
        const body = await readFile(file('api.json'));
        // Import needs a key with batches:write, and the batch's maker must be the key's organisation's (any, for the operator).
        const anonymous = await fetch(`${api}/batches`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        assert.equal(anonymous.status, 401);
        await cliOk(['org', 'create', ...dd, '--id', 'not-acme', '--name', 'Not Acme', '--role', 'device-maker']);
        const stranger = (await cliJson<{ key: string }>(['api-key', 'create', ...dd, '--org', 'not-acme', '--name', 'import', '--scope', 'batches:write'])).key;
        const foreign = await fetch(`${api}/batches`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${stranger}` }, body });
        assert.equal(foreign.status, 403);
        assert.equal(((await foreign.json()) as { code: string }).code, 'FORBIDDEN');
        const operator = (await cliJson<{ key: string }>(['api-key', 'create', ...dd, '--operator', '--name', 'import', '--scope', 'batches:write'])).key;
        const headers = { 'content-type': 'application/json', authorization: `Bearer ${operator}` };
        const first = await fetch(`${api}/batches`, { method: 'POST', headers, body });
        assert.equal(first.status, 201, await first.clone().text());
        assert.equal(((await first.json()) as { devices: number }).devices, 10);
        const replay = await fetch(`${api}/batches`, { method: 'POST', headers, body });
        assert.equal(replay.status, 409);
        assert.equal(replay.headers.get('content-type'), 'application/problem+json; charset=utf-8');
        assert.equal(((await replay.json()) as { code: string }).code, 'BATCH_ALREADY_IMPORTED');
        const tampered = Buffer.from(body.toString('utf8').replace(/"signature":"./, (m) => `${m.slice(0, -1)}${m.endsWith('A') ? 'B' : 'A'}`));
        const bad = await fetch(`${api}/batches`, { method: 'POST', headers, body: tampered });
        assert.equal(bad.status, 400);
        assert.equal(((await bad.json()) as { code: string }).code, 'BATCH_SIGNATURE_INVALID');
        // A conflicting DevEUI: 409 with the per-device report.
        const clash = await fetch(`${api}/batches`, { method: 'POST', headers, body: await readFile(file('clash.json')) });
        assert.equal(clash.status, 409);
        const report = (await clash.json()) as { code: string; conflicts: { devEui: string; reason: string }[] };
        assert.equal(report.code, 'BATCH_CONFLICT');
        assert.deepEqual(report.conflicts, [{ devEui: devices[7]!.devEui, reason: 'already known' }]);
      } finally {
        await server?.stop();
      }
      assert.equal(await inventoryCount(), 1020 - 5 + 10);
    });

    it('no root key in clear / in any file Joinkeep or the sealing tool wrote, only in the programmer files', async () => {
      // A sample (every 1.1 device and every 20th other one): each secret is searched in six encodings in every file.
      const secrets: Secret[] = devices.filter((d, i) => d.nwkKey !== undefined || i % 20 === 0).flatMap((d) => [
        { name: `AppKey of ${d.devEui}`, bytes: d.appKey },
        ...(d.nwkKey ? [{ name: `NwkKey of ${d.devEui}`, bytes: d.nwkKey }] : []),
      ]);
      const written = [
        ...(await filesUnder(root.dataDir)),
        ...(await filesUnder(root.root)).filter((f) => !f.where.startsWith(root.dataDir) && !f.where.endsWith('.programmer.csv') && !f.where.endsWith('prog.csv') && !f.where.endsWith('clash.csv')),
      ];
      assert.ok(written.some((f) => f.where.endsWith('batch-103.json')) && written.some((f) => f.where.endsWith('joinkeep.db')));
      const findings = written.flatMap((f) => findSecrets(f.bytes, secrets, f.where));
      assert.deepEqual(findings, [], describeFindings(findings));
    });
  });
}
