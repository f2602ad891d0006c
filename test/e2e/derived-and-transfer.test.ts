import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aes128EcbEncrypt } from '../../src/custody/primitives.js';
import { type Eui64, type MacVersion, devAddrFromLeBytes, eui64FromBeHex, netIdFromBeHex, vendorKdfInput } from '../../src/protocol/index.js';
import { SimulatedDevice } from '../../sim/device.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { NetworkServerClient } from '../../sim/network-server.js';
import { cliJson, cliOk, runCli, tempRoot, writeSecretFile } from '../helpers/cli-run.js';
import { createTestToken, softhsmModulePath } from '../helpers/softhsm.js';

/*
 * The two other ways keys reach Joinkeep (docs/specs/sealed-batch.md), end to end through the CLI and real joins:
 * - vendor-derived keys: a secure-element vendor seals one derivation master; its device batches carry identities
 *   only, and each device's root keys are derived inside custody (JK-KDF-1). The test derives the same keys with
 *   node:crypto as the secure element would, and the devices join with them.
 * - Join-Server-to-Join-Server transfer: Joinkeep A seals devices' keys and join state to Joinkeep B; B imports them
 *   and signs a receipt; devices join at B with JoinNonces continuing from A's; A retires them on the receipt.
 */

const JOIN_EUI = '70B3D57ED00300FF';
const HOME_NET = '000013';

interface Js {
  readonly dd: string[];
  readonly dataDir: string;
  readonly file: (name: string) => string;
}

async function newJoinkeep(root: string, name: string, custody: 'software' | 'pkcs11' | 'pkcs11-trusted' = 'software'): Promise<Js & { soPinFile?: string }> {
  const dataDir = join(root, name);
  const dd = ['--data-dir', dataDir];
  let soPinFile: string | undefined;
  if (custody !== 'software') {
    const token = createTestToken(name);
    const pinFile = await writeSecretFile(root, `${name}.pin`, `${token.pin}\n`);
    soPinFile = await writeSecretFile(root, `${name}.so-pin`, `${token.soPin}\n`);
    const trusted = custody === 'pkcs11-trusted' ? ['--trusted-keks', '--so-pin-file', soPinFile] : [];
    await cliOk(['init', ...dd, '--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', pinFile, ...trusted]);
  } else {
    await cliOk(['init', ...dd]);
  }
  await cliOk(['receiving-key', 'create', ...dd]);
  const file = (f: string) => join(root, `${name}.${f}`);
  await cliOk(['receiving-key', 'show', ...dd, '--out', file('receiving.jwk')]);
  return { dd, dataDir, file, ...(soPinFile === undefined ? {} : { soPinFile }) };
}

/** A home network server registered with its KEK and token; returns an NS client for a running server. */
async function addHomeNs(js: Js): Promise<(url: string) => NetworkServerClient> {
  const kek = randomBytes(16);
  const token = randomBytes(24).toString('hex');
  await writeFile(js.file('ns.kek'), kek.toString('hex'));
  await writeFile(js.file('ns.token'), token);
  await cliOk(['kek', 'add', ...js.dd, '--label', 'ns-000013', '--key-file', js.file('ns.kek')]);
  await cliOk(['peer', 'add-ns', ...js.dd, '--net-id', HOME_NET, '--token-file', js.file('ns.token'), '--kek-label', 'ns-000013']);
  return (url) => new NetworkServerClient({ url, token, netId: netIdFromBeHex(HOME_NET), kek: { label: 'ns-000013', key: kek }, style: 'tts' });
}

async function join1(ns: NetworkServerClient, device: SimulatedDevice, seq: number) {
  const { devEui, joinEui, macVersion } = device.identity;
  const ans = await ns.joinReq({ phyPayload: device.joinRequest(), devEui, joinEui, macVersion, devAddr: devAddrFromLeBytes(Buffer.of(seq, 0, 0, 1)), dlSettings: macVersion === '1.1' ? 0x80 : 0, rxDelay: 1 });
  if (!ans.ok) return { ans, outcome: undefined };
  return { ans, outcome: device.receiveJoinAccept(ans.phyPayload) };
}

async function programmed(path: string): Promise<{ devEui: Eui64; appKey: Buffer; nwkKey?: Buffer }[]> {
  const [header, ...lines] = (await readFile(path, 'utf8')).trim().split(/\r?\n/);
  const cols = header!.split(',').map((c) => c.trim().replace(/^"|"$/g, '').toLowerCase());
  return lines.map((l) => {
    const f = l.split(',').map((c) => c.trim().replace(/^"|"$/g, ''));
    const nwk = f[cols.indexOf('nwkkey')];
    return { devEui: eui64FromBeHex(f[cols.indexOf('deveui')]!), appKey: Buffer.from(f[cols.indexOf('appkey')]!, 'hex'), ...(nwk ? { nwkKey: Buffer.from(nwk, 'hex') } : {}) };
  });
}

for (const custody of ['software', 'pkcs11'] as const) {
  describe(`vendor-derived keys / ${custody === 'pkcs11' ? 'SoftHSM2' : 'software keystore'}`, { timeout: 300_000 }, () => {
    let root: Awaited<ReturnType<typeof tempRoot>>;
    let js: Js;
    const master = randomBytes(16);
    const oaep = custody === 'pkcs11' ? 'sha1' : 'sha256';
    const vendorFile = (f: string) => join(root.root, `vendor.${f}`);

    before(async () => {
      root = await tempRoot('joinkeep-derived-');
      js = await newJoinkeep(root.root, 'js', custody);
      await cliOk(['batch', 'keygen', '--out-private', vendorFile('private.jwk'), '--out-public', vendorFile('public.jwk'), '--alg', 'EdDSA']);
      await cliOk(['maker', 'add', ...js.dd, '--name', 'secure-chip', '--kind', 'se-vendor', '--public-key', vendorFile('public.jwk')]);
      await writeFile(vendorFile('master.hex'), master.toString('hex'));
      await cliOk(['batch', 'seal', '--kind', 'derivation-master', '--master-key-file', vendorFile('master.hex'), '--master-key-id', 'chip-m1', '--recipient', js.file('receiving.jwk'), '--signing-key', vendorFile('private.jwk'), '--maker', 'secure-chip', '--oaep', oaep, '--out', vendorFile('master.json')]);
      await cliOk(['batch', 'seal', '--kind', 'derived', '--derived-from', 'chip-m1', '--generate', '40', '--dev-eui-start', '70B3D57ED0070000', '--join-eui', JOIN_EUI, '--mac-version', '1.1', '--recipient', js.file('receiving.jwk'), '--signing-key', vendorFile('private.jwk'), '--maker', 'secure-chip', '--out', vendorFile('derived.json'), '--manifest', vendorFile('derived.csv')]);
    });
    after(async () => {
      await root.cleanup();
    });

    it('a derived batch before its master / refused, nothing imported', async () => {
      const r = await runCli(['batch', 'import', vendorFile('derived.json'), ...js.dd]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /chip-m1/);
      assert.equal((await cliJson<{ items: unknown[] }>(['inventory', 'list', ...js.dd])).items.length, 0);
    });

    it('master, then the derived batch / devices in the inventory with keys derived in custody; they join with the keys the secure element derives', async () => {
      await cliOk(['batch', 'import', vendorFile('master.json'), ...js.dd]);
      const r = await cliJson<{ devices: number; kind: string }>(['batch', 'import', vendorFile('derived.json'), ...js.dd]);
      assert.deepEqual([r.kind, r.devices], ['derived', 40]);
      const ns = await addHomeNs(js);
      const sample = ['70B3D57ED0070000', '70B3D57ED0070011', '70B3D57ED0070027'].map((d) => eui64FromBeHex(d));
      await cliOk(['device', 'bind', ...js.dd, '--dev-eui', sample.join(','), '--home-net-id', HOME_NET]);
      let server: RunningServer | undefined;
      try {
        server = await startServer(js.dataDir);
        for (const [i, devEui] of sample.entries()) {
          // What the secure element computes from the master it was personalized with (JK-KDF-1).
          const roots = { appKey: aes128EcbEncrypt(master, vendorKdfInput(devEui, 'AppKey')), nwkKey: aes128EcbEncrypt(master, vendorKdfInput(devEui, 'NwkKey')) };
          const device = new SimulatedDevice({ devEui, joinEui: eui64FromBeHex(JOIN_EUI), macVersion: '1.1', roots });
          const { ans, outcome } = await join1(ns(server.url), device, i);
          assert.ok(ans.ok && outcome?.accepted, `${devEui}: ${JSON.stringify(ans)} ${JSON.stringify(outcome)}`);
        }
      } finally {
        await server?.stop();
      }
    });
  });
}

describe('Join-Server-to-Join-Server transfer / software keystore', { timeout: 300_000 }, () => {
  let root: Awaited<ReturnType<typeof tempRoot>>;
  let a: Js;
  let b: Js;
  let devices: { devEui: Eui64; appKey: Buffer; nwkKey?: Buffer }[];
  let nsA: (url: string) => NetworkServerClient;
  let nsB: (url: string) => NetworkServerClient;
  const sim = new Map<string, SimulatedDevice>();

  before(async () => {
    root = await tempRoot('joinkeep-transfer-');
    [a, b] = [await newJoinkeep(root.root, 'a'), await newJoinkeep(root.root, 'b')];
    // Each Join Server has a signing identity the other registers.
    for (const [self, other, name] of [[a, b, 'js-a'], [b, a, 'js-b']] as const) {
      await cliOk(['batch', 'keygen', '--out-private', self.file('signing.private.jwk'), '--out-public', self.file('signing.public.jwk')]);
      await cliOk(['maker', 'add', ...other.dd, '--name', name, '--kind', 'join-server', '--public-key', self.file('signing.public.jwk')]);
    }
    // A factory batch at A: four LoRaWAN 1.1 devices.
    await cliOk(['batch', 'keygen', '--out-private', a.file('acme.private.jwk'), '--out-public', a.file('acme.public.jwk')]);
    await cliOk(['maker', 'add', ...a.dd, '--name', 'acme', '--public-key', a.file('acme.public.jwk')]);
    await cliOk(['batch', 'seal', '--recipient', a.file('receiving.jwk'), '--signing-key', a.file('acme.private.jwk'), '--maker', 'acme', '--generate', '4', '--dev-eui-start', '70B3D57ED0080000', '--join-eui', JOIN_EUI, '--mac-version', '1.1', '--out', a.file('factory.json'), '--manifest', a.file('factory.csv'), '--programmer-file', a.file('factory.programmer.csv')]);
    await cliOk(['batch', 'import', a.file('factory.json'), ...a.dd]);
    devices = await programmed(a.file('factory.programmer.csv'));
    await cliOk(['device', 'bind', ...a.dd, '--dev-eui', devices.map((d) => d.devEui).join(','), '--home-net-id', HOME_NET]);
    nsA = await addHomeNs(a);
    nsB = await addHomeNs(b);
    for (const d of devices) sim.set(d.devEui, new SimulatedDevice({ devEui: d.devEui, joinEui: eui64FromBeHex(JOIN_EUI), macVersion: '1.1' as MacVersion, roots: { appKey: d.appKey, nwkKey: d.nwkKey } }));
  });
  after(async () => {
    await root.cleanup();
  });

  it('devices join at A, move to B with their join state, join at B with JoinNonces continuing; A retires them on B\'s receipt', async () => {
    const moved = devices.slice(0, 3).map((d) => d.devEui);
    let server: RunningServer | undefined;
    try {
      server = await startServer(a.dataDir);
      for (const [i, devEui] of moved.entries()) {
        for (let n = 0; n < 2; n++) {
          const { outcome } = await join1(nsA(server.url), sim.get(devEui)!, i);
          assert.ok(outcome?.accepted);
        }
      }
    } finally {
      await server?.stop();
    }
    assert.equal(sim.get(moved[0]!)!.state.lastJoinNonce, 2);

    await cliOk(['transfer', 'export', ...a.dd, '--to', 'js-b', '--recipient-key', b.file('receiving.jwk'), '--dev-eui', moved.join(','), '--as', 'js-a', '--signing-key', a.file('signing.private.jwk'), '--out', a.file('transfer.json')]);
    // A keeps serving them until the receipt: nothing is lost if the transfer never arrives.
    assert.equal((await cliJson<{ items: unknown[] }>(['device', 'list', ...a.dd])).items.length, 4);

    await cliOk(['batch', 'import', a.file('transfer.json'), ...b.dd, '--receipt', b.file('receipt.json'), '--signing-key', b.file('signing.private.jwk'), '--as', 'js-b']);
    await cliOk(['device', 'bind', ...b.dd, '--dev-eui', moved.join(','), '--home-net-id', HOME_NET]);
    try {
      server = await startServer(b.dataDir);
      for (const [i, devEui] of moved.entries()) {
        const { ans, outcome } = await join1(nsB(server.url), sim.get(devEui)!, i);
        // A LoRaWAN 1.1 device accepts only a JoinNonce above the last it saw: 3, after A's 1 and 2.
        assert.ok(ans.ok && outcome?.accepted, `${devEui}: ${JSON.stringify(ans)} ${JSON.stringify(outcome)}`);
        assert.equal(sim.get(devEui)!.state.lastJoinNonce, 3);
      }
    } finally {
      await server?.stop();
    }

    // A tampered receipt is refused and retires nothing.
    const receipt = JSON.parse(await readFile(b.file('receipt.json'), 'utf8')) as { signature: string };
    await writeFile(a.file('bad-receipt.json'), JSON.stringify({ ...receipt, signature: `${receipt.signature.startsWith('A') ? 'B' : 'A'}${receipt.signature.slice(1)}` }));
    const bad = await runCli(['transfer', 'confirm', a.file('bad-receipt.json'), ...a.dd]);
    assert.equal(bad.code, 1, bad.stderr);
    assert.equal((await cliJson<{ items: unknown[] }>(['device', 'list', ...a.dd])).items.length, 4);

    const done = await cliJson<{ devices: number }>(['transfer', 'confirm', b.file('receipt.json'), ...a.dd]);
    assert.equal(done.devices, 3);
    const left = await cliJson<{ items: { devEui: string }[] }>(['device', 'list', ...a.dd]);
    assert.deepEqual(left.items.map((d) => d.devEui), [devices[3]!.devEui]);
    const keys = JSON.stringify(await cliJson<unknown>(['custody', 'inventory', ...a.dd]));
    for (const devEui of moved) assert.ok(!keys.includes(devEui), `${devEui}'s keys are retired at A`);
    const again = await runCli(['transfer', 'confirm', b.file('receipt.json'), ...a.dd]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /confirmed/);
    try {
      server = await startServer(a.dataDir);
      const { ans } = await join1(nsA(server.url), sim.get(moved[0]!)!, 9);
      assert.ok(!ans.ok && ans.kind === 'result' && ans.resultCode === 'UnknownDevEUI', 'A no longer activates a device it handed over');
    } finally {
      await server?.stop();
    }
  });

  it('from an HSM whose root keys cannot leave / export refused, nothing changes', async () => {
    const h = await newJoinkeep(root.root, 'hsm', 'pkcs11');
    await cliOk(['maker', 'add', ...h.dd, '--name', 'js-b', '--kind', 'join-server', '--public-key', b.file('signing.public.jwk')]);
    await cliOk(['batch', 'keygen', '--out-private', h.file('acme.private.jwk'), '--out-public', h.file('acme.public.jwk')]);
    await cliOk(['maker', 'add', ...h.dd, '--name', 'acme', '--public-key', h.file('acme.public.jwk')]);
    await cliOk(['batch', 'seal', '--recipient', h.file('receiving.jwk'), '--signing-key', h.file('acme.private.jwk'), '--maker', 'acme', '--generate', '1', '--dev-eui-start', '70B3D57ED0090000', '--join-eui', JOIN_EUI, '--mac-version', '1.0.3', '--oaep', 'sha1', '--out', h.file('f.json'), '--manifest', h.file('f.csv'), '--programmer-file', h.file('f.prog.csv')]);
    await cliOk(['batch', 'import', h.file('f.json'), ...h.dd]);
    const r = await runCli(['transfer', 'export', ...h.dd, '--to', 'js-b', '--recipient-key', b.file('receiving.jwk'), '--dev-eui', '70B3D57ED0090000', '--as', 'hsm', '--signing-key', h.file('acme.private.jwk'), '--out', h.file('t.json')]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /EXPORT_REFUSED|cannot leave|extractable/i);
    assert.equal((await cliJson<{ items: unknown[] }>(['inventory', 'list', ...h.dd])).items.length, 1);
  });

  it('from an HSM in trusted-KEK mode / sealed under a batch key the SO made trusted, imported at B with a receipt, devices join at B with their keys; A retires them from the token', async () => {
    const h = await newJoinkeep(root.root, 'hsmt', 'pkcs11-trusted');
    await cliOk(['maker', 'add', ...h.dd, '--name', 'js-b', '--kind', 'join-server', '--public-key', b.file('signing.public.jwk')]);
    await cliOk(['batch', 'keygen', '--out-private', h.file('signing.private.jwk'), '--out-public', h.file('signing.public.jwk')]);
    await cliOk(['maker', 'add', ...b.dd, '--name', 'js-h', '--kind', 'join-server', '--public-key', h.file('signing.public.jwk')]);
    await cliOk(['batch', 'keygen', '--out-private', h.file('acme.private.jwk'), '--out-public', h.file('acme.public.jwk')]);
    await cliOk(['maker', 'add', ...h.dd, '--name', 'acme', '--public-key', h.file('acme.public.jwk')]);
    await cliOk(['batch', 'seal', '--recipient', h.file('receiving.jwk'), '--signing-key', h.file('acme.private.jwk'), '--maker', 'acme', '--generate', '3', '--dev-eui-start', '70B3D57ED00A0000', '--join-eui', JOIN_EUI, '--mac-version', '1.1', '--oaep', 'sha1', '--out', h.file('f.json'), '--manifest', h.file('f.csv'), '--programmer-file', h.file('f.prog.csv')]);
    await cliOk(['batch', 'import', h.file('f.json'), ...h.dd]);
    const made = await programmed(h.file('f.prog.csv'));
    const moved = made.slice(0, 2);
    const out = h.file('t.json');
    const exportArgs = ['transfer', 'export', ...h.dd, '--to', 'js-b', '--recipient-key', b.file('receiving.jwk'), '--dev-eui', moved.map((d) => d.devEui).join(','), '--as', 'js-h', '--signing-key', h.file('signing.private.jwk')];

    // SoftHSM2 2.6.1 cannot wrap with OAEP SHA-256: refused, nothing written, nothing pending.
    const sha256 = await runCli([...exportArgs, '--so-pin-file', h.soPinFile!, '--out', out]);
    assert.equal(sha256.code, 1, sha256.stderr);
    assert.match(sha256.stderr, /MECHANISM_UNSUPPORTED|--oaep sha1/);
    // The SO PIN options go with trusted-KEK mode only, one per token.
    const wrongCount = await runCli([...exportArgs, '--so-pin-file', h.soPinFile!, '--so-pin-file', h.soPinFile!, '--oaep', 'sha1', '--out', out]);
    assert.equal(wrongCount.code, 2, wrongCount.stderr);
    const notTrusted = await runCli(['transfer', 'export', ...a.dd, '--to', 'js-b', '--recipient-key', b.file('receiving.jwk'), '--dev-eui', moved[0]!.devEui, '--as', 'js-a', '--signing-key', a.file('signing.private.jwk'), '--so-pin-file', h.soPinFile!, '--out', a.file('never.json')]);
    assert.equal(notTrusted.code, 2, notTrusted.stderr);
    assert.match(notTrusted.stderr, /trusted-KEK mode/);

    await cliOk([...exportArgs, '--so-pin-file', h.soPinFile!, '--oaep', 'sha1', '--out', out]);
    const keysAtH = await cliJson<{ keys: { handle: string; attributes: Record<string, boolean> }[] }>(['custody', 'inventory', ...h.dd]);
    const roots = keysAtH.keys.filter((k) => k.handle.startsWith('root/'));
    assert.equal(roots.length, 6);
    for (const k of roots) assert.deepEqual([k.attributes['CKA_SENSITIVE'], k.attributes['CKA_EXTRACTABLE'], k.attributes['CKA_WRAP_WITH_TRUSTED']], [true, true, true], k.handle);
    assert.ok(!keysAtH.keys.some((k) => k.handle.includes('batch')), 'no batch key left on the token');

    await cliOk(['batch', 'import', out, ...b.dd, '--receipt', b.file('receipt-h.json'), '--signing-key', b.file('signing.private.jwk'), '--as', 'js-b']);
    await cliOk(['device', 'bind', ...b.dd, '--dev-eui', moved.map((d) => d.devEui).join(','), '--home-net-id', HOME_NET]);
    let server: RunningServer | undefined;
    try {
      server = await startServer(b.dataDir);
      for (const [i, d] of moved.entries()) {
        const device = new SimulatedDevice({ devEui: d.devEui, joinEui: eui64FromBeHex(JOIN_EUI), macVersion: '1.1', roots: { appKey: d.appKey, nwkKey: d.nwkKey } });
        const { ans, outcome } = await join1(nsB(server.url), device, 20 + i);
        assert.ok(ans.ok && outcome?.accepted, `${d.devEui}: ${JSON.stringify(ans)} ${JSON.stringify(outcome)}`);
      }
    } finally {
      await server?.stop();
    }

    const done = await cliJson<{ devices: number }>(['transfer', 'confirm', b.file('receipt-h.json'), ...h.dd]);
    assert.equal(done.devices, 2);
    const left = JSON.stringify(await cliJson<unknown>(['custody', 'inventory', ...h.dd]));
    for (const d of moved) assert.ok(!left.includes(d.devEui), `${d.devEui}'s keys are retired from the token`);
    assert.ok(left.includes(made[2]!.devEui), 'the device that stayed keeps its keys');
  });
});
