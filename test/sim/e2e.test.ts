import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type MacVersion, devAddrFromBeHex, eui64FromBeHex, netIdFromBeHex } from '../../src/protocol/index.js';
import { runActivation } from '../../sim/activation-flow.js';
import { ApplicationServerClient } from '../../sim/application-server.js';
import { SimulatedDevice } from '../../sim/device.js';
import { wrapEnvelope } from '../../sim/key-envelope.js';
import { joinkeepCliExists, projectRoot, runJoinkeep } from '../../sim/joinkeep-cli.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { NetworkServerClient } from '../../sim/network-server.js';
import type { WireStyle } from '../../sim/wire-style.js';

/*
 * The simulators against a real Joinkeep: provisioned with the CLI in a temporary directory, `joinkeep serve`
 * on a free loopback port, then activations in both wire styles. Broader server behaviour is tested in test/e2e.
 */

const NET_ID = netIdFromBeHex('000013');
const NS_ID = eui64FromBeHex('000000000000ABCD');
const JOIN_EUI = eui64FromBeHex('70B3D57ED0000001');
const importKek = { label: 'factory', key: randomBytes(16) };
const nsKek = { label: 'ns-000013', key: randomBytes(16) };
const asKek = { label: 'as-e2e', key: randomBytes(16) };
const nsToken = randomBytes(32).toString('hex');
const asToken = randomBytes(32).toString('hex');

function runSim(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [`${projectRoot}dist/sim/cli.js`, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`sim ${args[0]} failed: ${stderr}${stdout}`));
      else resolve(stdout);
    });
  });
}

function newDevice(devEui: string, macVersion: MacVersion): SimulatedDevice {
  const roots = { appKey: randomBytes(16), ...(macVersion === '1.1' ? { nwkKey: randomBytes(16) } : {}) };
  return new SimulatedDevice({ devEui: eui64FromBeHex(devEui), joinEui: JOIN_EUI, macVersion, roots });
}

const devices = {
  '1.0.3': newDevice('00000000000E2E03', '1.0.3'),
  '1.1': newDevice('00000000000E2E11', '1.1'),
};

describe('simulators end to end against joinkeep serve', () => {
  before(() => assert.ok(joinkeepCliExists(), 'dist/src/cli/main.js is not built: run `npm test`, which builds first'));
  let root: string;
  let server: RunningServer;
  const file = (name: string, text: string): string => {
    const p = join(root, name);
    writeFileSync(p, `${text}\n`, { mode: 0o600 });
    return p;
  };

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'joinkeep-sim-e2e-'));
    const dataDir = join(root, 'data');
    await runJoinkeep(['init', '--data-dir', dataDir], dataDir);
    for (const k of [importKek, nsKek, asKek]) await runJoinkeep(['kek', 'add', '--data-dir', dataDir, '--label', k.label, '--key-file', file(`${k.label}.kek`, k.key.toString('hex'))], dataDir);
    await runJoinkeep(['peer', 'add-ns', '--data-dir', dataDir, '--net-id', NET_ID, '--ns-id', NS_ID, '--token-file', file('ns.token', nsToken), '--kek-label', nsKek.label], dataDir);
    await runJoinkeep(['peer', 'add-as', '--data-dir', dataDir, '--as-id', 'as-e2e', '--token-file', file('as.token', asToken), '--kek-label', asKek.label], dataDir);
    for (const d of Object.values(devices)) {
      const { devEui, joinEui, macVersion, roots } = d.identity;
      await runJoinkeep([
        'device', 'add', '--data-dir', dataDir, '--dev-eui', devEui, '--join-eui', joinEui, '--mac-version', macVersion,
        '--home-net-id', NET_ID, '--as-id', 'as-e2e', '--app-key', JSON.stringify(wrapEnvelope(importKek, roots.appKey)),
        ...(roots.nwkKey ? ['--nwk-key', JSON.stringify(wrapEnvelope(importKek, roots.nwkKey))] : []),
      ], dataDir);
    }
    server = await startServer(dataDir);
  });

  after(async () => {
    await server?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const ns = (style: WireStyle): NetworkServerClient =>
    new NetworkServerClient({ url: server.url, token: nsToken, netId: NET_ID, kek: nsKek, style, ...(style === 'tts' ? { nsId: NS_ID } : {}) });
  const as = (style: WireStyle): ApplicationServerClient =>
    new ApplicationServerClient({ url: server.url, token: asToken, asId: 'as-e2e', kek: asKek, style });
  const choices = { networkMacVersion: '1.1' as const, devAddr: devAddrFromBeHex('26011A2B'), dlSettings: 0x03, rxDelay: 1 };

  for (const style of ['tts', 'chirpstack'] as const) {
    for (const version of ['1.0.3', '1.1'] as const) {
      it(`${style} / LoRaWAN ${version} device / join accepted by the device, device keys = NS keys = AS key, no TS002 findings`, async () => {
        const device = devices[version];
        const run = await runActivation(device, ns(style), as(style), choices);
        assert.ok(run.answer.ok, JSON.stringify(run.answer));
        assert.ok(run.device?.accepted, JSON.stringify(run.device));
        assert.ok(run.ok, JSON.stringify(run.comparisons.map((c) => [c.key, c.match, c.note])));
        assert.equal(run.comparisons.length, version === '1.1' ? 4 : 2);
        assert.ok(run.comparisons.every((c) => c.match === true));
        assert.equal(run.device.keys.scheme, version === '1.1' ? 'lorawan11' : 'legacy');
        assert.deepEqual(run.answer.issues, []);

        // The AS fetches the same AppSKey again by SessionKeyID.
        const sessionKeyId = run.answer.sessionKeyId;
        assert.ok(sessionKeyId);
        const fetched = await as(style).appSKeyReq(device.identity.devEui, device.identity.joinEui, sessionKeyId);
        assert.ok(fetched.ok, JSON.stringify(fetched));
        assert.ok(fetched.appSKey.equals(run.device.keys.appSKey));
      });
    }
  }

  it('chirpstack / lower-case request / answer IDs in the server\'s canonical UPPER-case hex', async () => {
    const ans = await ns('chirpstack').homeNsReq(devices['1.0.3'].identity.devEui, JOIN_EUI);
    assert.deepEqual(ans.issues.filter((i) => /UPPER-case/.test(i)), []);
  });

  it('tts / LoRaWAN 1.1 device / rejoin type 1 accepted, JoinNonce increases, keys match', async () => {
    const device = devices['1.1'];
    const before = device.state.lastJoinNonce;
    const run = await runActivation(device, ns('tts'), as('tts'), choices, 1);
    assert.ok(run.ok && run.device?.accepted, JSON.stringify(run.answer));
    assert.ok(run.device.joinNonce > before);
    assert.equal(run.device.answeredTo.kind, 'rejoin-request');
  });

  it('tts / LoRaWAN 1.1 device on a 1.0.3 network / OptNeg=0, 1.0 keys from NwkKey match', async () => {
    const run = await runActivation(devices['1.1'], ns('tts'), as('tts'), { ...choices, networkMacVersion: '1.0.3' });
    assert.ok(run.ok && run.device?.accepted, JSON.stringify(run.answer));
    assert.equal(run.device.optNeg, false);
    assert.equal(run.device.keys.scheme, 'legacy');
  });

  it('chirpstack / HomeNSReq / HNetID is the home NetID', async () => {
    const ans = await ns('chirpstack').homeNsReq(devices['1.0.3'].identity.devEui, JOIN_EUI);
    assert.ok(ans.ok, JSON.stringify(ans));
    assert.equal(ans.hNetId.toUpperCase(), NET_ID);
  });

  it('sim CLI / join of a fresh 1.1 device with --state / report says OK and never prints a key without --show-keys', async () => {
    const d = devices['1.1'];
    const keys = { app: d.identity.roots.appKey, nwk: d.identity.roots.nwkKey! };
    const args = [
      'join', '--url', server.url, '--token-file', join(root, 'ns.token'), '--net-id', NET_ID, '--ns-id', NS_ID,
      '--ns-kek-file', join(root, `${nsKek.label}.kek`), '--ns-kek-label', nsKek.label,
      '--dev-eui', d.identity.devEui, '--join-eui', JOIN_EUI, '--mac-version', '1.1',
      '--app-key-file', file('cli-app.key', keys.app.toString('hex')), '--nwk-key-file', file('cli-nwk.key', keys.nwk.toString('hex')),
      '--as-kek-file', join(root, `${asKek.label}.kek`), '--state', join(root, 'cli-state.json'),
    ];
    // The CLI device starts from its own state file; continue the in-memory device's DevNonce counter
    // (the in-memory device is not used for joins after this test).
    writeFileSync(join(root, 'cli-state.json'), JSON.stringify({ ...d.state, session: null }), { mode: 0o600 });
    const out = await runSim(args);
    assert.match(out, /outcome {6}OK/);
    assert.match(out, /SNwkSIntKey {2}device = NS/);
    assert.match(out, /AppSKey {6}device = AS/);
    const secrets = [keys.app, keys.nwk, nsKek.key, asKek.key].map((k) => k.toString('hex').toUpperCase());
    for (const s of secrets) assert.ok(!out.toUpperCase().includes(s), 'no root key or KEK in the output');
    assert.doesNotMatch(out, /[0-9A-F]{32}\n/, 'no 16-byte value printed on its own line');
  });

  it('tts / wrong bearer token / HTTP 200 with Result UnknownSender', async () => {
    const bad = new NetworkServerClient({ ...ns('tts').config, token: 'not-the-token' });
    const ans = await bad.homeNsReq(devices['1.0.3'].identity.devEui, JOIN_EUI);
    assert.ok(!ans.ok && ans.kind === 'result', JSON.stringify(ans));
    assert.equal(ans.resultCode, 'UnknownSender');
    assert.deepEqual(ans.issues, []);
  });
});
