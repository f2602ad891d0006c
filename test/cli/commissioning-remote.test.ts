import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseManifest } from '../../src/commissioning/manifest.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { cliJson, cliOk, runCli, tempRoot, writeSecretFile } from '../helpers/cli-run.js';

/*
 * The organisation's commands (`joinkeep claim`, `bind`, `unbind`, `unclaim`, `devices`, `transfer offer|accept|list|
 * cancel`) as clients of a running Joinkeep's REST API, each in its own process with the server and API key taken
 * from the environment or --api-key-file, as a buyer would run them. Refusals exit 1 with the API's reason and
 * change nothing; usage errors exit 2.
 */

describe('the CLI against a remote Joinkeep (claim, bind, transfer, devices)', { timeout: 240_000 }, () => {
  let root: Awaited<ReturnType<typeof tempRoot>>;
  let dd: string[];
  let server: RunningServer;
  let devEuis: string[];
  let manifestText: string;
  const env: Record<string, Record<string, string>> = {};
  const file = (name: string) => join(root.root, name);

  before(async () => {
    root = await tempRoot('joinkeep-cli-remote-');
    dd = ['--data-dir', root.dataDir];
    await cliOk(['init', ...dd]);
    await cliOk(['receiving-key', 'create', ...dd]);
    await cliOk(['receiving-key', 'show', ...dd, '--out', file('js.jwk')]);
    await cliOk(['org', 'create', ...dd, '--id', 'acme', '--name', 'Acme', '--role', 'device-maker']);
    await cliOk(['org', 'create', ...dd, '--id', 'buyer-a', '--name', 'Buyer A', '--role', 'device-owner']);
    await cliOk(['org', 'create', ...dd, '--id', 'buyer-b', '--name', 'Buyer B', '--role', 'device-owner']);
    await cliOk(['batch', 'keygen', '--out-private', file('acme.private.jwk'), '--out-public', file('acme.public.jwk')]);
    await cliOk(['maker', 'add', ...dd, '--name', 'acme', '--public-key', file('acme.public.jwk'), '--org', 'acme']);
    await cliOk(['batch', 'seal', '--recipient', file('js.jwk'), '--signing-key', file('acme.private.jwk'), '--maker', 'acme', '--generate', '4', '--dev-eui-start', '70B3D57ED0300000', '--join-eui', '70B3D57ED00300FF', '--mac-version', '1.0.4', '--out', file('batch.json'), '--manifest', file('manifest.csv'), '--programmer-file', file('programmer.csv')]);
    await cliOk(['batch', 'import', ...dd, file('batch.json')]);
    manifestText = await readFile(file('manifest.csv'), 'utf8');
    devEuis = parseManifest(manifestText).entries.map((e) => e.devEui);
    server = await startServer(root.dataDir, { api: true });
    const scopes = ['devices:read', 'devices:claim', 'devices:bind', 'devices:transfer'];
    for (const org of ['buyer-a', 'buyer-b']) {
      const key = (await cliJson<{ key: string }>(['api-key', 'create', ...dd, '--org', org, '--name', 'cli', '--scope', ...scopes])).key;
      env[org] = { JOINKEEP_SERVER: server.apiUrl!, JOINKEEP_API_KEY: key };
      await writeSecretFile(root.root, `${org}.key`, `${key}\n`);
    }
  });

  after(async () => {
    await server?.stop();
  });

  it('usage errors exit 2: no server, no key, a key given nowhere', async () => {
    assert.equal((await runCli(['devices', 'list'])).code, 2);
    const noKey = await runCli(['devices', 'list'], { env: { JOINKEEP_SERVER: server.apiUrl! } });
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /--api-key-file FILE or set JOINKEEP_API_KEY/);
    assert.equal((await runCli(['claim', '--dev-eui', devEuis[0]!], { env: env['buyer-a'] })).code, 2, 'a DevEUI without its claim code');
  });

  it('a wrong claim code is refused like an unknown device (exit 1) and claims nothing', async () => {
    const wrong = await runCli(['claim', '--dev-eui', devEuis[0]!, '--claim-code', 'AAAA-AAAA-AAAA-AAAA'], { env: env['buyer-a'] });
    const unknown = await runCli(['claim', '--dev-eui', '70B3D57ED03FFFFF', '--claim-code', 'AAAA-AAAA-AAAA-AAAA'], { env: env['buyer-a'] });
    assert.equal(wrong.code, 1);
    assert.equal(wrong.stderr, unknown.stderr);
    assert.match(wrong.stderr, /claim failed with the given claim code \(CLAIM_FAILED\)/);
    assert.deepEqual(await cliJson<unknown[]>(['devices', 'list', '--json'], { env: env['buyer-a'] }), []);
  });

  it('claims a whole manifest, binds, offers by token and the other organisation accepts with the token file', async () => {
    const bulk = await cliJson<{ claimed: number; failed: number }>(['claim', '--manifest', file('manifest.csv'), '--json'], { env: env['buyer-a'] });
    assert.deepEqual({ claimed: bulk.claimed, failed: bulk.failed }, { claimed: 4, failed: 0 });
    const bound = await runCli(['bind', devEuis[0]!, devEuis[1]!, '--home-net-id', '000013', '--roaming', 'home-only', '--api-key-file', file('buyer-a.key')], { env: { JOINKEEP_SERVER: server.apiUrl! } });
    assert.equal(bound.code, 0, bound.stderr);
    assert.match(bound.stdout, /Bound 2 device\(s\)/);
    const mine = await cliJson<{ devEui: string; binding: { homeNetId: string; roaming: unknown } | null }[]>(['devices', 'list', '--bound', '--json'], { env: env['buyer-a'] });
    assert.deepEqual(mine.map((d) => [d.devEui, d.binding?.homeNetId, d.binding?.roaming]), [[devEuis[0], '000013', 'home-only'], [devEuis[1], '000013', 'home-only']]);

    const offer = await cliJson<{ transfer: { id: string; state: string }; token: string }>(['transfer', 'offer', devEuis[0]!, devEuis[1]!, '--json'], { env: env['buyer-a'] });
    assert.equal(offer.transfer.state, 'offered');
    assert.match(offer.token, /^jkt_/);
    const tokenFile = await writeSecretFile(root.root, 'transfer.token', `${offer.token}\n`);
    const accepted = await runCli(['transfer', 'accept', '--token-file', tokenFile], { env: env['buyer-b'] });
    assert.equal(accepted.code, 0, accepted.stderr);
    const atB = await cliJson<{ devEui: string; owner: string; binding: unknown }[]>(['devices', 'list', '--json'], { env: env['buyer-b'] });
    assert.deepEqual(atB.map((d) => [d.devEui, d.owner, d.binding]), [[devEuis[0], 'buyer-b', null], [devEuis[1], 'buyer-b', null]]);
    // The token is spent: a second acceptance is refused and changes nothing.
    const again = await runCli(['transfer', 'accept', '--token-file', tokenFile], { env: env['buyer-a'] });
    assert.equal(again.code, 1);
    const list = await cliJson<{ state: string }[]>(['transfer', 'list', '--json'], { env: env['buyer-a'] });
    assert.deepEqual(list.map((t) => t.state), ['accepted']);
  });

  it('unclaim returns devices to the maker; another buyer can then claim them with the same code', async () => {
    const entry = parseManifest(manifestText).entries[3]!;
    const refusedByB = await runCli(['unclaim', entry.devEui], { env: env['buyer-b'] });
    assert.equal(refusedByB.code, 1, 'B does not own it');
    assert.equal((await runCli(['unclaim', entry.devEui], { env: env['buyer-a'] })).code, 0);
    assert.equal((await runCli(['devices', 'show', entry.devEui], { env: env['buyer-a'] })).code, 1, 'no longer visible to A');
    const claimed = await runCli(['claim', '--qr', entry.qr!], { env: env['buyer-b'] });
    assert.equal(claimed.code, 0, claimed.stderr);
    assert.match(claimed.stdout, new RegExp(`Claimed ${entry.devEui} for buyer-b \\(locked\\)`));
  });
});
