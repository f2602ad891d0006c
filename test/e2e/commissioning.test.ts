import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseManifest } from '../../src/commissioning/manifest.js';
import { type MacVersion, devAddrFromLeBytes, netIdFromBeHex } from '../../src/protocol/index.js';
import { ApplicationServerClient } from '../../sim/application-server.js';
import { SimulatedDevice } from '../../sim/device.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { NetworkServerClient } from '../../sim/network-server.js';
import { type Programmed, programmerFile } from '../helpers/programmer-file.js';
import { cliJson, cliOk, tempRoot } from '../helpers/cli-run.js';
import { type Secret, describeFindings, findSecrets } from '../helpers/keys-search.js';

/*
 * The commissioning story end to end, over real HTTP, finding every REST route in the OpenAPI document by its
 * operationId: a maker imports a sealed batch; owner A claims a device by its TR005 QR code, binds it to its network
 * and application server; the device joins through A's network server and A's application server fetches the AppSKey;
 * A transfers the device to owner B, who binds it to its own network; A's network and application server are refused
 * from then on, the device joins through B's network (its JoinNonce continuing), and B's application server gets the
 * new AppSKey. Every API answer of the run is kept and searched for the test's key bytes: none may appear.
 */

const JOIN_EUI = '70B3D57ED00200FF';
const NET_A = '000013';
const NET_B = '000024';


interface Operation {
  readonly method: string;
  readonly path: string;
}

describe('commissioning end to end over the documented REST API', { timeout: 300_000 }, () => {
  let root: Awaited<ReturnType<typeof tempRoot>>;
  let dd: string[];
  let server: RunningServer;
  const file = (name: string) => join(root.root, name);
  const answers: { where: string; text: string }[] = [];
  const secrets: Secret[] = [];
  const operations = new Map<string, Operation>();
  const keys: Record<string, string> = {};
  const peers: Record<string, { token: string; kek: Buffer }> = {};
  let devices: Programmed[] = [];
  let manifest: ReturnType<typeof parseManifest>;

  /** Calls the operation `operationId` of the OpenAPI document; `params` fill its path template. */
  const call = async (operationId: string, key: string | undefined, opts: { params?: Record<string, string>; body?: unknown; query?: string } = {}) => {
    const op = operations.get(operationId);
    assert.ok(op, `the OpenAPI document has no operation ${operationId}`);
    const path = op.path.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(opts.params?.[name] ?? assert.fail(`no value for {${name}} of ${operationId}`)));
    const res = await fetch(`${server.apiUrl!}${path}${opts.query ? `?${opts.query}` : ''}`, {
      method: op.method,
      headers: { ...(key === undefined ? {} : { authorization: `Bearer ${key}` }), ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
    });
    const text = await res.text();
    answers.push({ where: `${op.method} ${path} → ${res.status}`, text });
    return { status: res.status, json: text === '' ? undefined : (JSON.parse(text) as any) };
  };

  const nsClient = (net: string) => new NetworkServerClient({ url: server.url, token: peers[`ns-${net}`]!.token, netId: netIdFromBeHex(net), kek: { label: `ns-${net}`, key: peers[`ns-${net}`]!.kek }, style: 'tts' });
  const asClient = (as: string) => new ApplicationServerClient({ url: server.url, token: peers[as]!.token, asId: as, kek: { label: as, key: peers[as]!.kek }, style: 'tts' });

  before(async () => {
    root = await tempRoot('joinkeep-commissioning-e2e-');
    dd = ['--data-dir', root.dataDir];
    await cliOk(['init', ...dd]);
    await cliOk(['receiving-key', 'create', ...dd]);
    await cliOk(['receiving-key', 'show', ...dd, '--out', file('joinkeep.jwk')]);

    // The parties, set up by the operator.
    await cliOk(['org', 'create', ...dd, '--id', 'acme', '--name', 'Acme Sensors', '--role', 'device-maker']);
    await cliOk(['org', 'create', ...dd, '--id', 'owner-a', '--name', 'Owner A', '--role', 'device-owner']);
    await cliOk(['org', 'create', ...dd, '--id', 'owner-b', '--name', 'Owner B', '--role', 'device-owner']);
    await cliOk(['org', 'create', ...dd, '--id', 'net-a', '--name', 'Network A', '--role', 'network-operator', 'as-operator', '--net-id', NET_A, '--as-id', 'as-a']);
    await cliOk(['org', 'create', ...dd, '--id', 'net-b', '--name', 'Network B', '--role', 'network-operator', 'as-operator', '--net-id', NET_B, '--as-id', 'as-b']);
    await cliOk(['batch', 'keygen', '--out-private', file('acme.private.jwk'), '--out-public', file('acme.public.jwk')]);
    await cliOk(['maker', 'add', ...dd, '--name', 'acme', '--public-key', file('acme.public.jwk'), '--org', 'acme']);
    for (const [label, org, add] of [
      [`ns-${NET_A}`, 'net-a', ['add-ns', '--net-id', NET_A]],
      [`ns-${NET_B}`, 'net-b', ['add-ns', '--net-id', NET_B]],
      ['as-a', 'net-a', ['add-as', '--as-id', 'as-a']],
      ['as-b', 'net-b', ['add-as', '--as-id', 'as-b']],
    ] as const) {
      const kek = randomBytes(16);
      const token = randomBytes(24).toString('hex');
      await writeFile(file(`${label}.kek`), kek.toString('hex'), { mode: 0o600 });
      await writeFile(file(`${label}.token`), token, { mode: 0o600 });
      await cliOk(['kek', 'add', ...dd, '--label', label, '--key-file', file(`${label}.kek`)]);
      await cliOk(['peer', ...add, ...dd, '--token-file', file(`${label}.token`), '--kek-label', label, '--org', org]);
      peers[label] = { token, kek };
      secrets.push({ name: `KEK ${label}`, bytes: kek });
    }
    const apiKey = async (org: string, scopes: string[]) => (await cliJson<{ key: string }>(['api-key', 'create', ...dd, '--org', org, '--name', 'e2e', '--scope', ...scopes])).key;
    keys['acme'] = await apiKey('acme', ['batches:write', 'batches:read', 'devices:read']);
    for (const owner of ['owner-a', 'owner-b']) keys[owner] = await apiKey(owner, ['devices:read', 'devices:claim', 'devices:bind', 'devices:transfer', 'audit:read', 'keks:read', 'peers:read']);

    // The factory: three LoRaWAN 1.1 devices, keys generated at the maker, claim codes printed in the QR codes.
    await cliOk(['batch', 'seal', '--recipient', file('joinkeep.jwk'), '--signing-key', file('acme.private.jwk'), '--maker', 'acme', '--generate', '3', '--dev-eui-start', '70B3D57ED0200000', '--join-eui', JOIN_EUI, '--mac-version', '1.1', '--out', file('batch.json'), '--manifest', file('manifest.csv'), '--programmer-file', file('programmer.csv')]);
    devices = await programmerFile(file('programmer.csv'));
    for (const d of devices) secrets.push({ name: `AppKey of ${d.devEui}`, bytes: d.appKey }, { name: `NwkKey of ${d.devEui}`, bytes: d.nwkKey! });
    manifest = parseManifest(await readFile(file('manifest.csv'), 'utf8'));

    server = await startServer(root.dataDir, { api: true });
    const doc = (await (await fetch(`${server.apiUrl!}/api/v1/openapi.json`)).json()) as { openapi: string; paths: Record<string, Record<string, { operationId?: string }>> };
    assert.match(doc.openapi, /^3\.1\./);
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) if (op.operationId) operations.set(op.operationId, { method: method.toUpperCase(), path });
    }
  });

  after(async () => {
    await server?.stop();
  });

  it('holds at every step, refusals included, and no API answer carries a key', async () => {
    const [d1, d2, d3] = devices as [Programmed, Programmed, Programmed];
    const qrOf = (d: Programmed) => manifest.entries.find((e) => e.devEui === d.devEui)!.qr!;
    const codeOf = (d: Programmed) => manifest.entries.find((e) => e.devEui === d.devEui)!.claimCode!;

    // 1. The maker imports its sealed batch; its stock is visible to it, to nobody else.
    const imported = await call('importBatch', keys['acme'], { body: JSON.parse(await readFile(file('batch.json'), 'utf8')) });
    assert.equal(imported.status, 201, JSON.stringify(imported.json));
    assert.equal((await call('listDevices', keys['acme'])).json.items.length, 3);
    assert.equal((await call('listDevices', keys['owner-a'])).json.items.length, 0);

    // 2. Owner A claims d1 by its QR code and d2 by DevEUI and claim code; a wrong code and an unknown DevEUI fail alike.
    const wrong = await call('claimDevice', keys['owner-a'], { body: { devEui: d3.devEui, claimCode: 'AAAA-AAAA-AAAA-AAAA' } });
    const unknown = await call('claimDevice', keys['owner-a'], { body: { devEui: '70B3D57ED02FFFFF', claimCode: 'AAAA-AAAA-AAAA-AAAA' } });
    assert.equal(wrong.status, 403);
    assert.deepEqual(wrong, unknown, 'a failed claim does not tell whether the device exists');
    const byQr = await call('claimDevice', keys['owner-a'], { body: { qrCode: qrOf(d1) } });
    assert.equal(byQr.status, 201, JSON.stringify(byQr.json));
    assert.deepEqual({ devEui: byQr.json.devEui, owner: byQr.json.owner, locked: byQr.json.locked }, { devEui: d1.devEui, owner: 'owner-a', locked: true });
    assert.equal((await call('claimDevice', keys['owner-a'], { body: { devEui: d2.devEui, claimCode: codeOf(d2) } })).status, 201);
    // Locked: B cannot claim d1 away with the same QR code.
    assert.equal((await call('claimDevice', keys['owner-b'], { body: { qrCode: qrOf(d1) } })).status, 403);
    // The maker no longer sees the claimed devices; B sees none of them and cannot tell them from unknown ones.
    assert.deepEqual((await call('listDevices', keys['acme'])).json.items.map((d: { devEui: string }) => d.devEui), [d3.devEui]);
    const hidden = await call('getDevice', keys['owner-b'], { params: { devEui: d1.devEui } });
    const absent = await call('getDevice', keys['owner-b'], { params: { devEui: '70B3D57ED02FFFFF' } });
    assert.equal(hidden.status, 404);
    assert.deepEqual({ ...hidden.json, detail: undefined }, { ...absent.json, detail: undefined });
    assert.equal(hidden.json.detail.replace(d1.devEui, 'X'), absent.json.detail.replace('70B3D57ED02FFFFF', 'X'));

    // 3. Before binding nobody may activate d1.
    const device = new SimulatedDevice({ devEui: d1.devEui, joinEui: d1.joinEui, macVersion: '1.1' as MacVersion, roots: { appKey: d1.appKey, nwkKey: d1.nwkKey } });
    let seq = 1;
    const join = async (net: string) => {
      const ans = await nsClient(net).joinReq({ phyPayload: device.joinRequest(), devEui: d1.devEui, joinEui: d1.joinEui, macVersion: '1.1', devAddr: devAddrFromLeBytes(Buffer.of(seq++, 0, 0, 1)), dlSettings: 0x80, rxDelay: 1 });
      return ans;
    };
    const refused = await join(NET_A);
    assert.ok(!refused.ok && refused.kind === 'result' && refused.resultCode === 'UnknownDevEUI', JSON.stringify(refused));

    // 4. A binds d1 to its network and application server; d1 joins through A's NS; A's AS fetches the AppSKey.
    const bound = await call('bindDevice', keys['owner-a'], { params: { devEui: d1.devEui }, body: { homeNetId: NET_A, asId: 'as-a', roaming: 'home-only' } });
    assert.equal(bound.status, 200, JSON.stringify(bound.json));
    assert.deepEqual(bound.json.binding.homeNetId, NET_A);
    const first = await join(NET_A);
    assert.ok(first.ok, JSON.stringify(first));
    const accepted = device.receiveJoinAccept(first.phyPayload);
    assert.ok(accepted.accepted, JSON.stringify(accepted));
    assert.ok(accepted.keys.scheme === 'lorawan11' && first.nsKeys.scheme === 'lorawan11' && accepted.keys.fNwkSIntKey.equals(first.nsKeys.fNwkSIntKey));
    secrets.push({ name: 'FNwkSIntKey (A)', bytes: first.nsKeys.scheme === 'lorawan11' ? first.nsKeys.fNwkSIntKey : Buffer.alloc(16) });
    const appA = await asClient('as-a').appSKeyReq(d1.devEui, d1.joinEui, first.sessionKeyId!);
    assert.ok(appA.ok, JSON.stringify(appA));
    assert.ok(accepted.keys.scheme === 'lorawan11' && appA.appSKey.equals(accepted.keys.appSKey));
    secrets.push({ name: 'AppSKey (A)', bytes: appA.appSKey });
    const activations = await call('listActivations', keys['owner-a'], { params: { devEui: d1.devEui } });
    assert.equal(activations.status, 200);
    assert.equal(activations.json.items.length, 1);
    assert.equal(activations.json.items[0].netId, NET_A);
    assert.equal(activations.json.items[0].joinNonce, 1);
    // Another network server cannot activate it.
    const foreign = await join(NET_B);
    assert.ok(!foreign.ok, JSON.stringify(foreign));
    // A sees why: the refusal, with its reason and who asked, beside the accepted join.
    const seen = (await call('listActivations', keys['owner-a'], { params: { devEui: d1.devEui } })).json.items as { outcome: string; result: string; sender: string | null }[];
    assert.deepEqual(seen.map((a) => [a.outcome, a.result, a.sender]), [['refused', 'ACTIVATION_DISALLOWED', `ns/${NET_B}`], ['accepted', 'Success', null]]);

    // 5. A offers d1 to B; B accepts. A's network and application server are refused from then on.
    const offer = await call('offerTransfer', keys['owner-a'], { body: { devEuis: [d1.devEui], to: 'owner-b' } });
    assert.equal(offer.status, 201, JSON.stringify(offer.json));
    assert.equal(offer.json.token, undefined, 'a direct offer has no token');
    // Only B may accept it: A cannot, and nobody else sees it.
    assert.equal((await call('acceptTransfer', keys['owner-a'], { params: { id: offer.json.transfer.id } })).status, 404);
    const acceptedTransfer = await call('acceptTransfer', keys['owner-b'], { params: { id: offer.json.transfer.id } });
    assert.equal(acceptedTransfer.status, 200, JSON.stringify(acceptedTransfer.json));
    assert.equal(acceptedTransfer.json.state, 'accepted');
    assert.equal((await call('getDevice', keys['owner-a'], { params: { devEui: d1.devEui } })).status, 404, 'A no longer sees d1');
    const atB = await call('getDevice', keys['owner-b'], { params: { devEui: d1.devEui } });
    assert.equal(atB.json.owner, 'owner-b');
    assert.equal(atB.json.binding, null, 'transferred devices arrive unbound');
    const oldAs = await asClient('as-a').appSKeyReq(d1.devEui, d1.joinEui, first.sessionKeyId!);
    assert.ok(!oldAs.ok, `A's application server must not get the AppSKey any more: ${JSON.stringify(oldAs)}`);
    const oldNs = await join(NET_A);
    assert.ok(!oldNs.ok && oldNs.kind === 'result' && oldNs.resultCode === 'UnknownDevEUI', JSON.stringify(oldNs));

    // 6. B binds d1 to its own network; A's network stays refused; d1 joins through B's, its JoinNonce continuing.
    assert.equal((await call('bindDevice', keys['owner-b'], { params: { devEui: d1.devEui }, body: { homeNetId: NET_B, asId: 'as-b', roaming: 'home-only' } })).status, 200);
    const stillA = await join(NET_A);
    assert.ok(!stillA.ok, JSON.stringify(stillA));
    const second = await join(NET_B);
    assert.ok(second.ok, JSON.stringify(second));
    const acceptedB = device.receiveJoinAccept(second.phyPayload);
    assert.ok(acceptedB.accepted, `the device accepts B's Join-accept (JoinNonce above A's): ${JSON.stringify(acceptedB)}`);
    const appB = await asClient('as-b').appSKeyReq(d1.devEui, d1.joinEui, second.sessionKeyId!);
    assert.ok(appB.ok && acceptedB.keys.scheme === 'lorawan11' && appB.appSKey.equals(acceptedB.keys.appSKey), JSON.stringify(appB));
    secrets.push({ name: 'AppSKey (B)', bytes: appB.ok ? appB.appSKey : Buffer.alloc(16) });
    assert.ok(!(await asClient('as-a').appSKeyReq(d1.devEui, d1.joinEui, second.sessionKeyId!)).ok, 'A\'s AS gets nothing of the new session either');

    // 7. The audit trails: each owner sees its own side of the transfer, and nothing of the other's.
    const trailA = (await call('listAuditEvents', keys['owner-a'], { query: 'limit=1000' })).json.items as { action: string; organisation: string }[];
    const trailB = (await call('listAuditEvents', keys['owner-b'], { query: 'limit=1000' })).json.items as { action: string; organisation: string }[];
    assert.ok(trailA.some((e) => e.action === 'device.transfer-out') && trailA.every((e) => e.organisation === 'owner-a'));
    assert.ok(trailB.some((e) => e.action === 'device.transfer-in') && trailB.every((e) => e.organisation === 'owner-b'));

    // 8. No answer of the API, in any encoding, carries a root key, KEK or session key of this run.
    const findings = answers.flatMap((a) => findSecrets(a.text, secrets, a.where));
    assert.equal(findings.length, 0, describeFindings(findings));
    assert.ok(answers.length > 20);
  });
});
