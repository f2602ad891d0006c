import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Eui64, devAddrFromLeBytes, eui64FromBeHex, netIdFromBeHex } from '../../src/protocol/index.js';
import { SimulatedDevice } from '../../sim/device.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { NetworkServerClient } from '../../sim/network-server.js';
import { cliJson, cliOk, runCli, tempRoot } from '../helpers/cli-run.js';

/*
 * The Things Join Server claim API v2 end to end, as The Things Stack's Device Claiming Server (ttjsv2 client) uses
 * it: an operator sets Joinkeep up with the CLI only (organisations, a maker's sealed batch with claim codes, the
 * owner's home network, claim clients pinned by certificate, the Backend Interfaces listener on TLS with a client
 * CA), `joinkeep serve` runs as a child process, and the test speaks HTTPS with client certificates. Every refusal
 * is checked to change nothing: the claim status, the maker's inventory and the audit trail stay as they were.
 */

const JOIN_EUI = '70B3D57ED00100FF';
const HOME_NET = '000013';
const HOME_NS = '70B3D57ED0000013';
const CLAIM_FAILED = '{"message":"claim failed with given owner token"}';

interface Response {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
}

interface ManifestRow {
  readonly devEui: string;
  readonly claimCode: string;
  readonly qr: string;
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A CA; the server's certificate for 127.0.0.1 and the clients' certificates, all signed by it. */
function makePki(dir: string, clients: readonly string[]): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(dir, 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Joinkeep test CA');
  const signed = (name: string, subject: string, ext?: string) => {
    openssl(dir, 'req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
    if (ext !== undefined) writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', ...(ext === undefined ? [] : ['-extfile', `${name}.ext`]));
  };
  signed('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1\n');
  for (const name of clients) signed(name, `/CN=${name}.example`);
}

function parseManifest(text: string): ManifestRow[] {
  const [header, ...lines] = text.trim().split(/\r?\n/);
  const cols = header!.split(',');
  return lines.map((line) => {
    const f = line.split(',');
    return { devEui: f[cols.indexOf('devEui')]!, claimCode: f[cols.indexOf('claimCode')]!, qr: f[cols.indexOf('qr')]! };
  });
}

async function programmerKeys(path: string): Promise<Map<string, Buffer>> {
  const [, ...lines] = (await readFile(path, 'utf8')).trim().split(/\r?\n/);
  return new Map(lines.map((l) => { const f = l.split(','); return [f[0]!, Buffer.from(f[2]!, 'hex')] as const; }));
}

describe('claim API v2 (The Things Join Server) end to end / over TLS with client certificates', { timeout: 300_000 }, () => {
  let root: Awaited<ReturnType<typeof tempRoot>>;
  let dd: string[];
  let server: RunningServer | undefined;
  let devices: ManifestRow[] = [];
  let appKeys: Map<string, Buffer>;
  let pki: Record<string, { key: Buffer; cert: Buffer }> = {};
  let ca: Buffer;
  const kek = randomBytes(16);
  const nsToken = randomBytes(32).toString('hex');
  const file = (name: string) => join(root.root, name);

  /** One request exactly as The Things Stack's client makes it: HTTPS, the client certificate, JSON bodies. */
  function call(method: string, path: string, options: { client?: string; body?: unknown; rawBody?: string } = {}): Promise<Response> {
    const url = new URL(path, server!.url);
    const body = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
    const id = options.client === undefined ? {} : pki[options.client]!;
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method, ca, ...id, agent: false, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }
  const claimBody = (ownerToken: string, extra: Record<string, unknown> = {}) => ({ ownerToken, homeNetID: HOME_NET, homeNSID: HOME_NS, asID: 'tts-as', lock: true, ...extra });
  const claim = (devEui: string, ownerToken: string, client = 'dcs', extra: Record<string, unknown> = {}) =>
    call('PUT', `/api/v2/devices/${devEui}/claim`, { client, body: claimBody(ownerToken, extra) });
  const status = (devEui: string, client = 'dcs') => call('GET', `/api/v2/devices/${devEui}/claim`, { client });

  const auditCount = async (): Promise<number> => {
    let n = 0;
    for (let cursor: string | undefined; ; ) {
      const page = await cliJson<{ items: unknown[]; next?: string }>(['audit', 'list', ...dd, '--limit', '1000', ...(cursor ? ['--after', cursor] : [])]);
      n += page.items.length;
      if (!page.next) return n;
      cursor = page.next;
    }
  };
  const inStock = async (devEui: string): Promise<boolean> => {
    const r = await runCli(['inventory', 'show', ...dd, '--dev-eui', devEui, '--json']);
    assert.ok(r.code === 0 || r.code === 1, `inventory show: ${r.code} ${r.stderr}`);
    return r.code === 0;
  };
  /** What a refusal must leave as it was: each device's claim status (as `owner` sees it), the stock, the audit trail. */
  const snapshot = async (euis: readonly string[]) => ({
    status: await Promise.all(euis.map(async (e) => { const r = await status(e); return `${r.status} ${r.text}`; })),
    stock: await Promise.all(euis.map(inStock)),
    audit: await auditCount(),
  });

  const join103 = async (devEui: string, n: number) => {
    const agent = new https.Agent({ ca, ...pki['ns']!, keepAlive: false });
    const ns = new NetworkServerClient({ url: server!.url, token: nsToken, netId: netIdFromBeHex(HOME_NET), kek: { label: 'ns-000013', key: kek }, style: 'tts', agent });
    const device = new SimulatedDevice({ devEui: devEui as Eui64, joinEui: eui64FromBeHex(JOIN_EUI), macVersion: '1.0.3', roots: { appKey: appKeys.get(devEui)! } });
    const ans = await ns.joinReq({ phyPayload: device.joinRequest(), devEui: devEui as Eui64, joinEui: eui64FromBeHex(JOIN_EUI), macVersion: '1.0.3', devAddr: devAddrFromLeBytes(Buffer.of(n, 0, 0, 0x26)), dlSettings: 0, rxDelay: 1 });
    return { ans, device };
  };

  before(async () => {
    root = await tempRoot('joinkeep-claim-v2-');
    dd = ['--data-dir', root.dataDir];
    const clients = ['dcs', 'rival', 'burst', 'stranger', 'ns'];
    makePki(root.root, clients);
    ca = await readFile(file('ca.pem'));
    pki = Object.fromEntries(await Promise.all(clients.map(async (c) => [c, { key: await readFile(file(`${c}.key`)), cert: await readFile(file(`${c}.pem`)) }] as const)));

    // The operator: a data directory, the receiving key, the organisations, the maker and its batch.
    await cliOk(['init', ...dd]);
    await cliOk(['receiving-key', 'create', ...dd]);
    await cliOk(['receiving-key', 'show', ...dd, '--out', file('joinkeep.jwk')]);
    await cliOk(['org', 'create', ...dd, '--id', 'acme', '--name', 'Acme Devices', '--role', 'device-maker']);
    await cliOk(['org', 'create', ...dd, '--id', 'owner', '--name', 'Owner Ltd', '--role', 'device-owner']);
    await cliOk(['org', 'create', ...dd, '--id', 'rival', '--name', 'Rival Ltd', '--role', 'device-owner']);
    await cliOk(['batch', 'keygen', '--out-private', file('acme.private.jwk'), '--out-public', file('acme.public.jwk')]);
    await cliOk(['maker', 'add', ...dd, '--name', 'acme', '--public-key', file('acme.public.jwk'), '--org', 'acme']);
    await cliOk([
      'batch', 'seal', '--recipient', file('joinkeep.jwk'), '--signing-key', file('acme.private.jwk'), '--maker', 'acme',
      '--generate', '6', '--dev-eui-start', '70B3D57ED0010000', '--join-eui', JOIN_EUI, '--mac-version', '1.0.3',
      '--out', file('batch.json'), '--manifest', file('batch.manifest.csv'), '--programmer-file', file('batch.programmer.csv'),
    ]);
    await cliOk(['batch', 'import', file('batch.json'), ...dd]);
    devices = parseManifest(await readFile(file('batch.manifest.csv'), 'utf8'));
    appKeys = await programmerKeys(file('batch.programmer.csv'));
    assert.equal(devices.length, 6);
    assert.ok(devices.every((d) => /^[0-9A-Z]{4}(-[0-9A-Z]{4}){3}$/.test(d.claimCode)), 'the manifest carries claim codes');

    // The owner's home network: its NS (client certificate and token, KEK) and AS; the claim clients.
    await writeFile(file('ns.kek'), kek.toString('hex'));
    await writeFile(file('ns.token'), nsToken, { mode: 0o600 });
    await writeFile(file('as.kek'), randomBytes(16).toString('hex'));
    await writeFile(file('as.token'), randomBytes(32).toString('hex'), { mode: 0o600 });
    await cliOk(['kek', 'add', ...dd, '--label', 'ns-000013', '--key-file', file('ns.kek')]);
    await cliOk(['kek', 'add', ...dd, '--label', 'as-tts', '--key-file', file('as.kek')]);
    await cliOk(['peer', 'add-ns', ...dd, '--net-id', HOME_NET, '--ns-id', HOME_NS, '--client-cert', file('ns.pem'), '--token-file', file('ns.token'), '--kek-label', 'ns-000013']);
    await cliOk(['peer', 'add-as', ...dd, '--as-id', 'tts-as', '--token-file', file('as.token'), '--kek-label', 'as-tts']);
    await cliOk(['peer', 'add-claim-client', ...dd, '--name', 'tts-dcs', '--client-cert', file('dcs.pem'), '--org', 'owner']);
    await cliOk(['peer', 'add-claim-client', ...dd, '--name', 'rival-dcs', '--client-cert', file('rival.pem'), '--org', 'rival']);
    await cliOk(['peer', 'add-claim-client', ...dd, '--name', 'burst-dcs', '--client-cert', file('burst.pem'), '--org', 'owner']);

    // The Backend Interfaces listener on TLS, client certificates checked against the CA.
    const configPath = join(root.dataDir, 'joinkeep.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as { backend: Record<string, unknown> };
    config.backend['tls'] = { keyFile: file('server.key'), certFile: file('server.pem'), clientCaFile: file('ca.pem') };
    await writeFile(configPath, JSON.stringify(config, null, 2));
    server = await startServer(root.dataDir, { tls: { ca }, api: true });
    assert.ok(server.url.startsWith('https://'));
  });
  after(async () => {
    await server?.stop();
    await root?.cleanup();
  });

  it('authentication / no certificate, an unregistered one and the NS peer\'s each 401; nothing changes', async () => {
    const d = devices[0]!;
    const before = await snapshot([d.devEui]);
    for (const client of [undefined, 'stranger', 'ns']) {
      for (const r of [
        await call('PUT', `/api/v2/devices/${d.devEui}/claim`, { ...(client === undefined ? {} : { client }), body: claimBody(d.claimCode) }),
        await call('GET', `/api/v2/devices/${d.devEui}/claim`, client === undefined ? {} : { client }),
        await call('DELETE', `/api/v2/devices/${d.devEui}/claim`, client === undefined ? {} : { client }),
        await call('DELETE', `/api/v2/devices/${d.devEui},${devices[1]!.devEui}/claims`, client === undefined ? {} : { client }),
      ]) {
        assert.equal(r.status, 401, `${client ?? 'no certificate'}: ${r.status} ${r.text}`);
        assert.equal(typeof (JSON.parse(r.text) as { message: unknown }).message, 'string');
      }
    }
    assert.deepEqual(await snapshot([d.devEui]), before);
    assert.equal(before.status[0], `404 ${JSON.stringify({ message: 'device not claimed' })}`);
    assert.equal(before.stock[0], true);
  });

  it('a kek in the claim body / 400, the device stays unclaimed and in stock', async () => {
    const d = devices[0]!;
    const before = await snapshot([d.devEui]);
    const r = await claim(d.devEui, d.claimCode, 'dcs', { kek: { label: 'tts-kek', key: randomBytes(16).toString('hex') } });
    assert.equal(r.status, 400, r.text);
    assert.match((JSON.parse(r.text) as { message: string }).message, /KEK/);
    assert.deepEqual(await snapshot([d.devEui]), before);
  });

  it('malformed bodies / 400, nothing changes', async () => {
    const d = devices[0]!;
    const before = await snapshot([d.devEui]);
    for (const [what, r] of [
      ['not JSON', await call('PUT', `/api/v2/devices/${d.devEui}/claim`, { client: 'dcs', rawBody: '{"ownerToken":' })],
      ['no homeNetID', await call('PUT', `/api/v2/devices/${d.devEui}/claim`, { client: 'dcs', body: { ownerToken: d.claimCode, lock: true } })],
      ['bad homeNetID', await claim(d.devEui, d.claimCode, 'dcs', { homeNetID: 'nope' })],
      ['bad homeNSID', await claim(d.devEui, d.claimCode, 'dcs', { homeNSID: '13' })],
    ] as const) {
      assert.equal(r.status, 400, `${what}: ${r.status} ${r.text}`);
      assert.equal(typeof (JSON.parse(r.text) as { message: unknown }).message, 'string', what);
    }
    assert.deepEqual(await snapshot([d.devEui]), before);
  });

  it('a wrong owner token and an unknown DevEUI / byte-identical 403 bodies; nothing changes', async () => {
    const d = devices[0]!;
    const unknown = '70B3D57ED00F0000';
    const before = await snapshot([d.devEui, unknown]);
    const wrong = await claim(d.devEui, devices[1]!.claimCode);
    const nobody = await claim(unknown, d.claimCode);
    // Tokens that are not even a claim code's shape are failed claims like any other.
    const malformed = await claim(d.devEui, 'not a claim code!');
    const empty = await claim(d.devEui, '');
    for (const r of [wrong, nobody, malformed, empty]) {
      assert.equal(r.status, 403);
      assert.equal(r.text, CLAIM_FAILED);
      assert.equal(r.headers['content-type'], wrong.headers['content-type']);
    }
    assert.deepEqual(await snapshot([d.devEui, unknown]), before);
  });

  it('claim with the manifest\'s claim code / 2xx; GET shows the home network and locked; the device joins through the home NS', async () => {
    const d = devices[0]!;
    const audit = await auditCount();
    const r = await claim(d.devEui, d.claimCode);
    assert.ok(r.status >= 200 && r.status < 300, `${r.status} ${r.text}`);
    const s = await status(d.devEui);
    assert.equal(s.status, 200, s.text);
    assert.deepEqual(JSON.parse(s.text), { homeNetID: HOME_NET, homeNSID: HOME_NS, locked: true });
    assert.equal(await inStock(d.devEui), false, 'no longer in the maker\'s stock');
    assert.ok((await auditCount()) > audit, 'the claim and the binding are audited');
    const trail = await cliJson<{ items: { actor: string; action: string; organisation?: string }[] }>(['audit', 'list', ...dd, '--subject', `device/${d.devEui}`]);
    const claimed = trail.items.find((e) => e.action === 'device.claim');
    assert.equal(claimed?.actor, 'claim/tts-dcs', 'the claim client is the actor');
    assert.equal(claimed?.organisation, 'owner');
    assert.ok(trail.items.some((e) => e.action === 'device.bind' && e.actor === 'claim/tts-dcs'));
    // Only the owner's client sees the claim.
    assert.equal((await status(d.devEui, 'rival')).status, 404);

    const { ans, device } = await join103(d.devEui, 1);
    assert.ok(ans.ok, JSON.stringify(ans));
    const outcome = device.receiveJoinAccept(ans.phyPayload);
    assert.ok(outcome.accepted, JSON.stringify(outcome));
    const nsKey = ans.nsKeys.scheme === 'legacy' ? ans.nsKeys.nwkSKey : ans.nsKeys.fNwkSIntKey;
    const devKey = outcome.keys.scheme === 'legacy' ? outcome.keys.nwkSKey : outcome.keys.fNwkSIntKey;
    assert.ok(nsKey.equals(devKey), 'the NS and the device derived the same network key');
  });

  it('claim with the QR code\'s OwnerToken (what The Things Stack sends) and no homeNSID / 2xx; GET omits homeNSID', async () => {
    const d = devices[1]!;
    const token = d.qr.split(':')[5]!.replace(/^O/, '');
    const r = await call('PUT', `/api/v2/devices/${d.devEui}/claim`, { client: 'dcs', body: { ownerToken: token, homeNetID: HOME_NET, asID: '', lock: true } });
    assert.ok(r.status >= 200 && r.status < 300, `${r.status} ${r.text}`);
    const s = await status(d.devEui);
    assert.deepEqual(JSON.parse(s.text), { homeNetID: HOME_NET, locked: true });
    // Claiming again (a retry) is fine for the owner.
    const again = await claim(d.devEui, d.claimCode);
    assert.ok(again.status >= 200 && again.status < 300, `${again.status} ${again.text}`);
  });

  it('a locked device / another organisation\'s claim client with the same token gets 403; nothing changes', async () => {
    const d = devices[0]!;
    const before = await snapshot([d.devEui]);
    const r = await claim(d.devEui, d.claimCode, 'rival');
    assert.equal(r.status, 403);
    assert.equal(r.text, CLAIM_FAILED);
    assert.deepEqual(await snapshot([d.devEui]), before);
    assert.equal((await status(d.devEui, 'rival')).status, 404);
    // The owner's network still activates it.
    const { ans } = await join103(d.devEui, 2);
    assert.ok(ans.ok, JSON.stringify(ans));
  });

  it('DELETE claim / back in the maker\'s stock: GET 404, the home NS\'s join refused; a second DELETE is 404', async () => {
    const d = devices[0]!;
    const r = await call('DELETE', `/api/v2/devices/${d.devEui}/claim`, { client: 'dcs' });
    assert.ok(r.status >= 200 && r.status < 300, `${r.status} ${r.text}`);
    assert.equal((await status(d.devEui)).status, 404);
    assert.equal(await inStock(d.devEui), true);
    const { ans } = await join103(d.devEui, 3);
    assert.ok(!ans.ok && ans.kind === 'result' && ans.resultCode === 'UnknownDevEUI', JSON.stringify(ans));
    const before = await snapshot([d.devEui]);
    const again = await call('DELETE', `/api/v2/devices/${d.devEui}/claim`, { client: 'dcs' });
    assert.equal(again.status, 404, again.text);
    // Another organisation's client cannot unclaim the owner's device either.
    const foreign = await call('DELETE', `/api/v2/devices/${devices[1]!.devEui}/claim`, { client: 'rival' });
    assert.equal(foreign.status, 404, foreign.text);
    assert.equal((await status(devices[1]!.devEui)).status, 200);
    assert.deepEqual(await snapshot([d.devEui]), before);
    // Back in stock, it can be claimed again with its code.
    const reclaim = await claim(d.devEui, d.claimCode, 'rival');
    assert.ok(reclaim.status >= 200 && reclaim.status < 300, `${reclaim.status} ${reclaim.text}`);
    assert.equal((await status(d.devEui, 'rival')).status, 200);
  });

  it('batch DELETE with one claimed and one unknown EUI / 400 naming only the unknown one; the claimed one is unclaimed', async () => {
    const claimed = devices[1]!;
    const unknown = '70B3D57ED00F0001';
    assert.equal((await status(claimed.devEui)).status, 200);
    const r = await call('DELETE', `/api/v2/devices/${claimed.devEui},${unknown}/claims`, { client: 'dcs' });
    assert.equal(r.status, 400, r.text);
    const body = JSON.parse(r.text) as Record<string, { message: string }>;
    assert.deepEqual(Object.keys(body), [unknown]);
    assert.equal(typeof body[unknown]!.message, 'string');
    assert.equal((await status(claimed.devEui)).status, 404);
    assert.equal(await inStock(claimed.devEui), true);
    // All known: 2xx.
    for (const d of devices.slice(2, 4)) assert.ok(((await claim(d.devEui, d.claimCode)).status) < 300);
    const ok = await call('DELETE', `/api/v2/devices/${devices[2]!.devEui},${devices[3]!.devEui}/claims`, { client: 'dcs' });
    assert.ok(ok.status >= 200 && ok.status < 300, `${ok.status} ${ok.text}`);
    assert.equal(await inStock(devices[2]!.devEui), true);
    assert.equal(await inStock(devices[3]!.devEui), true);
  });

  it('10 failed claims / the same client then gets 429 with Retry-After, even with the right code; other clients are not limited', async () => {
    const d = devices[4]!;
    const before = await snapshot([d.devEui]);
    for (let i = 0; i < 10; i++) {
      // Wrong codes and malformed tokens count alike.
      const r = await claim(d.devEui, i % 2 === 0 ? devices[5]!.claimCode : '#', 'burst');
      assert.equal(r.status, 403, `failure ${i + 1}: ${r.status} ${r.text}`);
    }
    const limited = await claim(d.devEui, d.claimCode, 'burst');
    assert.equal(limited.status, 429, limited.text);
    const retryAfter = Number(limited.headers['retry-after']);
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${limited.headers['retry-after']}`);
    assert.deepEqual(await snapshot([d.devEui]), before, 'the rate-limited claim changed nothing');
    const other = await claim(d.devEui, d.claimCode, 'dcs');
    assert.ok(other.status >= 200 && other.status < 300, `${other.status} ${other.text}`);
  });

  it('regenerateOwnerToken / the new token is returned once and replaces the old one', async () => {
    const d = devices[3]!;
    const r = await claim(d.devEui, d.claimCode, 'dcs', { regenerateOwnerToken: true });
    assert.ok(r.status >= 200 && r.status < 300, `${r.status} ${r.text}`);
    const fresh = (JSON.parse(r.text) as { ownerToken?: string }).ownerToken;
    assert.ok(typeof fresh === 'string' && fresh.length >= 16, r.text);
    assert.ok((await call('DELETE', `/api/v2/devices/${d.devEui}/claim`, { client: 'dcs' })).status < 300);
    const stale = await claim(d.devEui, d.claimCode, 'rival');
    assert.equal(stale.text, CLAIM_FAILED, 'the manifest\'s code no longer claims it');
    const renewed = await claim(d.devEui, fresh, 'rival');
    assert.ok(renewed.status >= 200 && renewed.status < 300, `${renewed.status} ${renewed.text}`);
    assert.equal((await status(d.devEui, 'rival')).status, 200);
    // The REST API's claim settings regenerate the code the same way (same storage rule for the hash).
    const key = (await cliJson<{ key: string }>(['api-key', 'create', ...dd, '--org', 'rival', '--name', 'claims', '--scope', 'devices:claim'])).key;
    const patched = await fetch(`${server!.apiUrl!}/api/v1/devices/${d.devEui}/claim`, { method: 'PATCH', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify({ regenerate: true }) });
    assert.equal(patched.status, 200, await patched.clone().text());
    const third = ((await patched.json()) as { claimCode?: string }).claimCode;
    assert.ok(typeof third === 'string');
    assert.ok((await call('DELETE', `/api/v2/devices/${d.devEui}/claim`, { client: 'rival' })).status < 300);
    assert.equal((await claim(d.devEui, fresh, 'rival')).text, CLAIM_FAILED);
    assert.ok((await claim(d.devEui, third, 'rival')).status < 300);
  });

  it('a DevEUI that is not an EUI / 400, and not counted as a failed claim', async () => {
    const r = await claim('zz', devices[0]!.claimCode);
    assert.equal(r.status, 400, r.text);
    assert.equal((await status('zz')).status, 400);
  });

  it('lower-case EUIs / the same devices: claim, GET and batch DELETE (the error map names the EUI as sent)', async () => {
    const d = devices[5]!;
    const lower = d.devEui.toLowerCase();
    const r = await claim(lower, d.claimCode.toLowerCase());
    assert.ok(r.status >= 200 && r.status < 300, `${r.status} ${r.text}`);
    assert.equal((await status(d.devEui)).status, 200);
    assert.equal((await status(lower)).status, 200);
    const unknown = '70b3d57ed00f0002';
    const del = await call('DELETE', `/api/v2/devices/${lower},${unknown}/claims`, { client: 'dcs' });
    assert.equal(del.status, 400, del.text);
    assert.deepEqual(Object.keys(JSON.parse(del.text) as object), [unknown]);
    assert.equal(await inStock(d.devEui), true);
  });
});
