import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openSqliteStorage } from '../../src/storage/index.js';
import {
  type CliResult,
  type DataDirSnapshot,
  cliJson,
  cliOk,
  runCli,
  snapshot,
  tempRoot,
  wrappedEnvelope,
  writeSecretFile,
} from '../helpers/cli-run.js';
import { createTestDatabase } from '../helpers/postgres.js';

/*
 * The CLI as an operator uses it: the compiled `joinkeep` in a child process, temporary data directories.
 * Every refusal must say what is wrong on stderr, exit non-zero, and change nothing (devices, KEKs, peers,
 * audit trail, and — on SQLite, read directly — the sealed key records).
 */

const DEV_103 = { devEui: '0004A30B001C0530', joinEui: '70B3D57ED0000001' };
const DEV_11 = { devEui: '0004A30B001C0531', joinEui: '70B3D57ED0000001' };
const NS_KEK = Buffer.from('000102030405060708090A0B0C0D0E0F', 'hex');
const AS_KEK = Buffer.from('101112131415161718191A1B1C1D1E1F', 'hex');

interface DeviceJson { devEui: string; joinEui: string; macVersion: string; homeNetId: string; homeNsId: string | null; asId: string | null; roamingNetIds: string[] | null; createdAt: string }
interface DeviceShowJson extends DeviceJson { joinState: { lastJoinNonce: number; lastDevNonce: number | null }; sessions: unknown[] }
interface PeerJson { id: string; kind: string; netId: string | null; nsId: string | null; asId: string | null; kekLabel: string | null; allowClearKeys: boolean; token: boolean; clientCert: boolean }
interface AuditJson { items: { action: string; subject: string; actor: string; outcome: string }[] }

/** Asserts a refusal: the exit code, one `joinkeep: error:` line (or a usage message) matching `message`, nothing on stdout. */
function assertRefused(r: CliResult, code: number, message: RegExp): void {
  assert.equal(r.code, code, `joinkeep ${r.args.join(' ')} should exit ${code}, exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.match(r.stderr, /^(joinkeep: error: |error: )/m, 'the error is reported on stderr with the joinkeep prefix');
  assert.doesNotMatch(r.stderr, /\n\s+at .+\(.*:\d+:\d+\)/, 'no stack trace for a refusal');
  assert.equal(r.stdout, '', 'a refusal prints nothing on stdout');
}

function assertNoSecretIn(text: string, secrets: readonly Buffer[], where: string): void {
  for (const s of secrets) {
    const h = s.toString('hex');
    assert.equal(text.toLowerCase().includes(h), false, `${where} contains a secret in hex`);
    assert.equal(text.includes(s.toString('base64')), false, `${where} contains a secret in base64`);
  }
}

/** Sealed key handles on a SQLite data directory, read directly (the CLI never lists root keys). */
async function sqliteKeyHandles(dataDir: string): Promise<string[]> {
  const storage = await openSqliteStorage(join(dataDir, 'joinkeep.db'));
  try {
    return (await storage.listKeyRecords()).map((k) => k.handle).sort();
  } finally {
    await storage.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------

interface Backend {
  readonly name: 'sqlite' | 'postgres';
  /** Extra `init` arguments, and a cleanup for what the backend created. */
  prepare(): Promise<{ initArgs: string[]; cleanup(): Promise<void> }>;
}

const backends: readonly Backend[] = [
  { name: 'sqlite', prepare: async () => ({ initArgs: [], cleanup: async () => undefined }) },
  {
    name: 'postgres',
    async prepare() {
      const db = await createTestDatabase();
      return { initArgs: ['--storage', 'postgres', '--postgres-url', db.url], cleanup: () => db.drop() };
    },
  },
];

for (const backend of backends) {
  describe(`cli / happy path on ${backend.name}`, () => {
    let tmp: Awaited<ReturnType<typeof tempRoot>>;
    let prepared: Awaited<ReturnType<Backend['prepare']>>;
    let dd: string[];
    const provisioningKek = randomBytes(16);
    const appKey103 = randomBytes(16);
    const appKey11 = randomBytes(16);
    const nwkKey11 = randomBytes(16);
    const nsToken = randomBytes(32).toString('hex');
    const asToken = randomBytes(32).toString('hex');
    const visitorToken = randomBytes(32).toString('hex');
    const printed: string[] = [];
    const run = async (args: string[], env?: Record<string, string>): Promise<CliResult> => {
      const r = await cliOk(args, env ? { env } : {});
      printed.push(r.stdout, r.stderr);
      return r;
    };

    before(async () => {
      tmp = await tempRoot();
      prepared = await backend.prepare();
      dd = ['--data-dir', tmp.dataDir];
    });
    after(async () => {
      await tmp?.cleanup();
      await prepared?.cleanup();
    });

    it('init creates the data directory (0700) with joinkeep.json and a 0600 master key, and says where the key is', async () => {
      const r = await run(['init', ...dd, ...prepared.initArgs]);
      assert.match(r.stdout, new RegExp(`Initialised .*${backend.name === 'sqlite' ? 'sqlite' : 'postgres'} storage`));
      assert.match(r.stdout, /master\.key/);
      assert.equal((await stat(tmp.dataDir)).mode & 0o777, 0o700);
      assert.equal((await stat(join(tmp.dataDir, 'master.key'))).mode & 0o777, 0o600);
      assert.match(await readFile(join(tmp.dataDir, 'master.key'), 'utf8'), /^[0-9a-f]{64}\n$/);
      const config = JSON.parse(await readFile(join(tmp.dataDir, 'joinkeep.json'), 'utf8')) as { storage: { kind: string } };
      assert.equal(config.storage.kind, backend.name);
      const files = (await readdir(tmp.dataDir)).sort();
      assert.deepEqual(files.filter((f) => !f.startsWith('joinkeep.db')), ['joinkeep.json', 'master.key']);
      if (backend.name === 'sqlite') assert.ok(files.includes('joinkeep.db'));
      else assert.ok(!files.includes('joinkeep.db'), 'a PostgreSQL data directory has no SQLite file');
    });

    it('kek add stores KEKs from files of 32 hex digits; kek list shows labels only', async () => {
      await run(['kek', 'add', ...dd, '--label', 'ns-000013', '--key-file', await writeSecretFile(tmp.root, 'ns.kek', `${NS_KEK.toString('hex')}\n`)]);
      await run(['kek', 'add', ...dd, '--label', 'as-1', '--key-file', await writeSecretFile(tmp.root, 'as.kek', AS_KEK.toString('hex').toUpperCase())]);
      const r = await run(['kek', 'add', ...dd, '--label', 'provisioning', '--key-file', await writeSecretFile(tmp.root, 'prov.kek', provisioningKek.toString('hex'))]);
      assert.match(r.stdout, /Added KEK "provisioning"/);
      const keks = await cliJson<{ label: string; createdAt: string }[]>(['kek', 'list', ...dd]);
      assert.deepEqual(keks.map((k) => k.label).sort(), ['as-1', 'ns-000013', 'provisioning']);
      for (const k of keks) assert.ok(!Number.isNaN(Date.parse(k.createdAt)));
      assert.deepEqual(Object.keys(keks[0] ?? {}).sort(), ['createdAt', 'label'], 'kek list shows no key material');
    });

    it('peer add-ns / add-as register peers with their KEK or an explicit clear-key permission; peer list shows no token', async () => {
      await run(['peer', 'add-ns', ...dd, '--net-id', '000013', '--token-file', await writeSecretFile(tmp.root, 'ns.token', nsToken), '--kek-label', 'ns-000013']);
      await run(['peer', 'add-as', ...dd, '--as-id', 'as-1', '--token-file', await writeSecretFile(tmp.root, 'as.token', asToken), '--kek-label', 'as-1']);
      const r = await run(['peer', 'add-ns', ...dd, '--net-id', '000042', '--ns-id', '0000000000000042', '--token-file', await writeSecretFile(tmp.root, 'visitor.token', visitorToken), '--allow-clear-keys']);
      assert.match(r.stdout, /Registered network server ns\/000042\/0000000000000042\tclear keys allowed/);
      const peers = await cliJson<PeerJson[]>(['peer', 'list', ...dd]);
      const byId = new Map(peers.map((p) => [p.id, p]));
      assert.deepEqual([...byId.keys()].sort(), ['as/as-1', 'ns/000013', 'ns/000042/0000000000000042']);
      assert.deepEqual(byId.get('ns/000013'), { id: 'ns/000013', kind: 'ns', netId: '000013', nsId: null, asId: null, kekLabel: 'ns-000013', allowClearKeys: false, token: true, clientCert: false });
      assert.deepEqual(byId.get('as/as-1'), { id: 'as/as-1', kind: 'as', netId: null, nsId: null, asId: 'as-1', kekLabel: 'as-1', allowClearKeys: false, token: true, clientCert: false });
      assert.equal(byId.get('ns/000042/0000000000000042')?.allowClearKeys, true);
      const text = await run(['peer', 'list', ...dd]);
      assert.match(text.stdout, /ns\/000013\tKEK "ns-000013"\ttoken/);
    });

    it('device add provisions a LoRaWAN 1.0.3 device from a wrapped AppKey envelope', async () => {
      const r = await run([
        'device', 'add', ...dd,
        '--dev-eui', DEV_103.devEui.toLowerCase(), '--join-eui', DEV_103.joinEui, '--mac-version', '1.0.3',
        '--home-net-id', '000013', '--as-id', 'as-1',
        '--app-key', wrappedEnvelope('provisioning', provisioningKek, appKey103),
      ]);
      assert.match(r.stdout, /Added device 0004A30B001C0530 \(LoRaWAN 1\.0\.3, JoinEUI 70B3D57ED0000001, home NetID 000013, AS as-1\)/);
    });

    it('device add provisions a LoRaWAN 1.1 device from wrapped AppKey and NwkKey envelopes, with NSID and roaming NetIDs', async () => {
      await run([
        'device', 'add', ...dd,
        '--dev-eui', DEV_11.devEui, '--join-eui', DEV_11.joinEui, '--mac-version', '1.1',
        '--home-net-id', '000013', '--home-ns-id', '00000000000000AA', '--as-id', 'as-1', '--roaming-net-ids', '000042, 000043',
        '--app-key', wrappedEnvelope('provisioning', provisioningKek, appKey11),
        '--nwk-key', wrappedEnvelope('provisioning', provisioningKek, nwkKey11),
      ]);
    });

    it('device show --json gives the device, an untouched join state and no sessions; the text form shows the same device', async () => {
      const d = await cliJson<DeviceShowJson>(['device', 'show', ...dd, '--dev-eui', DEV_11.devEui]);
      assert.equal(d.devEui, DEV_11.devEui);
      assert.equal(d.joinEui, DEV_11.joinEui);
      assert.equal(d.macVersion, '1.1');
      assert.equal(d.homeNetId, '000013');
      assert.equal(d.homeNsId, '00000000000000AA');
      assert.equal(d.asId, 'as-1');
      assert.deepEqual(d.roamingNetIds, ['000042', '000043']);
      assert.equal(d.joinState.lastJoinNonce, 0);
      assert.equal(d.joinState.lastDevNonce, null);
      assert.deepEqual(d.sessions, []);
      const d103 = await cliJson<DeviceShowJson>(['device', 'show', ...dd, '--dev-eui', DEV_103.devEui]);
      assert.equal(d103.macVersion, '1.0.3');
      assert.equal(d103.homeNsId, null);
      assert.equal(d103.roamingNetIds, null);
      const text = await run(['device', 'show', ...dd, '--dev-eui', DEV_103.devEui]);
      assert.match(text.stdout, /DevEUI\s+0004A30B001C0530/);
      assert.match(text.stdout, /LoRaWAN\s+1\.0\.3/);
    });

    it('device list --json lists both devices', async () => {
      const list = await cliJson<{ items: DeviceJson[]; next?: string }>(['device', 'list', ...dd]);
      assert.deepEqual(list.items.map((d) => [d.devEui, d.macVersion]).sort(), [[DEV_103.devEui, '1.0.3'], [DEV_11.devEui, '1.1']]);
      assert.equal(list.next, undefined);
    });

    it('audit list --json records init, every KEK, peer and device added, by the cli actor; --action filters', async () => {
      const audit = await cliJson<AuditJson>(['audit', 'list', ...dd]);
      const actions = audit.items.map((e) => e.action).sort();
      assert.deepEqual(actions, ['datadir.init', 'device.add', 'device.add', 'kek.add', 'kek.add', 'kek.add', 'peer.add', 'peer.add', 'peer.add']);
      for (const e of audit.items) assert.equal(e.actor, 'cli');
      const devices = await cliJson<AuditJson>(['audit', 'list', ...dd, '--action', 'device.add']);
      assert.deepEqual(devices.items.map((e) => e.subject).sort(), [`device/${DEV_103.devEui}`, `device/${DEV_11.devEui}`]);
      printed.push(JSON.stringify(audit));
    });

    it('JOINKEEP_DATA_DIR works instead of --data-dir and names the same data directory', async () => {
      const env = { JOINKEEP_DATA_DIR: tmp.dataDir };
      const viaEnv = await cliJson<{ items: DeviceJson[] }>(['device', 'list'], { env });
      const viaOption = await cliJson<{ items: DeviceJson[] }>(['device', 'list', ...dd]);
      assert.deepEqual(viaEnv, viaOption);
      assert.deepEqual(await cliJson<unknown>(['kek', 'list'], { env }), await cliJson<unknown>(['kek', 'list', ...dd]));
      const shown = await cliJson<DeviceShowJson>(['device', 'show', '--dev-eui', DEV_103.devEui], { env });
      assert.equal(shown.devEui, DEV_103.devEui);
    });

    it('nothing the CLI printed contains a root key, KEK or token', () => {
      assertNoSecretIn(printed.join('\n'), [appKey103, appKey11, nwkKey11, provisioningKek, NS_KEK, AS_KEK], 'CLI output');
      for (const t of [nsToken, asToken, visitorToken]) assert.equal(printed.join('\n').includes(t), false, 'CLI output contains a bearer token');
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------

describe('cli / refusals change nothing (sqlite)', () => {
  let tmp: Awaited<ReturnType<typeof tempRoot>>;
  let dd: string[];
  const provisioningKek = randomBytes(16);
  const appKey = randomBytes(16);
  const nwkKey = randomBytes(16);
  const nsToken = randomBytes(32).toString('hex');
  let existing: { json: string; masterKey: string };
  // The state every refusal must leave behind: taken once after provisioning (nothing in this suite may change it).
  let baseline: DataDirSnapshot;
  let baselineKeys: string[];

  before(async () => {
    tmp = await tempRoot();
    dd = ['--data-dir', tmp.dataDir];
    await cliOk(['init', ...dd]);
    await cliOk(['kek', 'add', ...dd, '--label', 'provisioning', '--key-file', await writeSecretFile(tmp.root, 'prov.kek', provisioningKek.toString('hex'))]);
    await cliOk(['kek', 'add', ...dd, '--label', 'ns-000013', '--key-file', await writeSecretFile(tmp.root, 'ns.kek', NS_KEK.toString('hex'))]);
    await cliOk(['peer', 'add-ns', ...dd, '--net-id', '000013', '--token-file', await writeSecretFile(tmp.root, 'ns.token', nsToken), '--kek-label', 'ns-000013']);
    await cliOk(['device', 'add', ...dd, '--dev-eui', DEV_103.devEui, '--join-eui', DEV_103.joinEui, '--mac-version', '1.0.3', '--home-net-id', '000013', '--app-key', wrappedEnvelope('provisioning', provisioningKek, appKey)]);
    existing = {
      json: await readFile(join(tmp.dataDir, 'joinkeep.json'), 'utf8'),
      masterKey: await readFile(join(tmp.dataDir, 'master.key'), 'utf8'),
    };
    baseline = await snapshot(tmp.dataDir);
    baselineKeys = await sqliteKeyHandles(tmp.dataDir);
    assert.equal((baseline.devices as { items: unknown[] }).items.length, 1);
    assert.equal(baselineKeys.length, 3, 'two KEKs and one AppKey');
  });
  after(async () => {
    await tmp?.cleanup();
  });

  /** Runs a command that must be refused, and checks that the data directory is unchanged. */
  async function refused(args: string[], code: number, message: RegExp, options: { env?: Record<string, string>; secrets?: Buffer[] } = {}): Promise<CliResult> {
    const r = await runCli(args, options.env ? { env: options.env } : {});
    assertRefused(r, code, message);
    assertNoSecretIn(r.stderr, [appKey, nwkKey, provisioningKek, NS_KEK, ...(options.secrets ?? [])], 'the error message');
    assert.deepEqual(await snapshot(tmp.dataDir), baseline, 'devices, KEKs, peers and audit trail are unchanged');
    assert.deepEqual(await sqliteKeyHandles(tmp.dataDir), baselineKeys, 'no sealed key was added or removed');
    return r;
  }

  const device = (over: Record<string, string | undefined>, extra: string[] = []): string[] => {
    const o: Record<string, string | undefined> = {
      '--dev-eui': '0004A30B001C0599',
      '--join-eui': DEV_103.joinEui,
      '--mac-version': '1.0.3',
      '--home-net-id': '000013',
      '--app-key': wrappedEnvelope('provisioning', provisioningKek, appKey),
      ...over,
    };
    return ['device', 'add', ...dd, ...Object.entries(o).flatMap(([k, v]) => (v === undefined ? [] : [k, v])), ...extra];
  };

  describe('data directory', () => {
    it('missing --data-dir (and no JOINKEEP_DATA_DIR) is a usage error (exit 2) naming both', async () => {
      const r = await refused(['device', 'list', '--json'], 2, /--data-dir/);
      assert.match(r.stderr, /JOINKEEP_DATA_DIR/);
      await refused(['kek', 'add', '--label', 'x', '--key-file', join(tmp.root, 'prov.kek')], 2, /--data-dir/);
    });

    it('a data directory that was never initialised is refused (exit 1) with the init command to run, and nothing is created in it', async () => {
      const empty = join(tmp.root, 'empty');
      await mkdir(empty);
      await refused(['device', 'list', '--data-dir', empty], 1, /is not a Joinkeep data directory.*joinkeep init/);
      await refused(['kek', 'add', '--data-dir', empty, '--label', 'x', '--key-file', join(tmp.root, 'prov.kek')], 1, /not a Joinkeep data directory/);
      assert.deepEqual(await readdir(empty), []);
      const absent = join(tmp.root, 'absent');
      await refused(['peer', 'list', '--data-dir', absent], 1, /not a Joinkeep data directory/);
      await assert.rejects(stat(absent), 'a missing data directory is not created by a non-init command');
    });

    it('init on an existing data directory is refused (exit 1) and leaves the configuration, master key and data intact', async () => {
      await refused(['init', ...dd], 1, /already a Joinkeep data directory/);
      await refused(['init'], 1, /already a Joinkeep data directory/, { env: { JOINKEEP_DATA_DIR: tmp.dataDir } });
      assert.equal(await readFile(join(tmp.dataDir, 'joinkeep.json'), 'utf8'), existing.json);
      assert.equal(await readFile(join(tmp.dataDir, 'master.key'), 'utf8'), existing.masterKey);
      assert.equal((await stat(join(tmp.dataDir, 'master.key'))).mode & 0o777, 0o600);
    });
  });

  describe('kek add', () => {
    it('a KEK file that is not hex is refused (exit 1), and the message does not echo the file', async () => {
      const text = 'zz'.repeat(16);
      const r = await refused(['kek', 'add', ...dd, '--label', 'bad', '--key-file', await writeSecretFile(tmp.root, 'nothex.kek', text)], 1, /32 hex digits/);
      assert.equal(r.stderr.includes(text), false);
    });

    it('a KEK file of the wrong length (30 hex digits) is refused (exit 1), and the message does not echo the file', async () => {
      const key = randomBytes(15);
      await refused(['kek', 'add', ...dd, '--label', 'short', '--key-file', await writeSecretFile(tmp.root, 'short.kek', key.toString('hex'))], 1, /32 hex digits/, { secrets: [key] });
    });

    it('a KEK file that does not exist is a usage error (exit 2)', async () => {
      await refused(['kek', 'add', ...dd, '--label', 'missing', '--key-file', join(tmp.root, 'no-such.kek')], 2, /--key-file .* cannot be read/);
    });

    it('a duplicate KEK label is refused (exit 1): KEKs are never replaced', async () => {
      const other = randomBytes(16);
      await refused(['kek', 'add', ...dd, '--label', 'provisioning', '--key-file', await writeSecretFile(tmp.root, 'dup.kek', other.toString('hex'))], 1, /KEK labelled "provisioning" already exists/, { secrets: [other] });
    });
  });

  describe('peer add', () => {
    it('a peer naming an unknown KEK label is refused (exit 1)', async () => {
      await refused(['peer', 'add-ns', ...dd, '--net-id', '000014', '--token-file', await writeSecretFile(tmp.root, 't1', randomBytes(32).toString('hex')), '--kek-label', 'nope'], 1, /no KEK labelled "nope"/);
      await refused(['peer', 'add-as', ...dd, '--as-id', 'as-9', '--token-file', await writeSecretFile(tmp.root, 't2', randomBytes(32).toString('hex')), '--kek-label', 'nope'], 1, /no KEK labelled "nope"/);
    });

    it('a duplicate peer (same NetID) is refused (exit 1)', async () => {
      await refused(['peer', 'add-ns', ...dd, '--net-id', '000013', '--token-file', await writeSecretFile(tmp.root, 't3', randomBytes(32).toString('hex')), '--kek-label', 'ns-000013'], 1, /ns\/000013 is already registered/);
    });

    it('a second peer with the same bearer token is refused (exit 1), and the message does not show the token', async () => {
      const r = await refused(['peer', 'add-ns', ...dd, '--net-id', '000015', '--token-file', join(tmp.root, 'ns.token'), '--allow-clear-keys'], 1, /already uses this token/);
      assert.equal(r.stderr.includes(nsToken), false);
    });

    it('a peer with both a KEK label and --allow-clear-keys is refused (exit 1)', async () => {
      await refused(['peer', 'add-ns', ...dd, '--net-id', '000016', '--token-file', await writeSecretFile(tmp.root, 't4', randomBytes(32).toString('hex')), '--kek-label', 'ns-000013', '--allow-clear-keys'], 1, /either a KEK label or --allow-clear-keys/);
    });
  });

  describe('device add', () => {
    it('a clear root key envelope (empty KEKLabel) is refused (exit 1) and the key is not echoed', async () => {
      const clear = randomBytes(16);
      await refused(device({ '--app-key': JSON.stringify({ KEKLabel: '', AESKey: clear.toString('hex').toUpperCase() }) }), 1, /empty KEKLabel: root keys are accepted only wrapped/, { secrets: [clear] });
    });

    it('an envelope naming an unknown KEK label is refused (exit 1)', async () => {
      await refused(device({ '--app-key': wrappedEnvelope('nope', provisioningKek, appKey) }), 1, /no KEK labelled "nope"/);
    });

    it('an envelope wrapped under another KEK than its label names does not unwrap and is refused (exit 1)', async () => {
      await refused(device({ '--app-key': wrappedEnvelope('provisioning', randomBytes(16), appKey) }), 1, /--app-key: .*does not unwrap under KEK "provisioning"/);
    });

    it('a 1.1 device whose NwkKey does not unwrap leaves no AppKey behind (all or nothing)', async () => {
      await refused(
        device({ '--mac-version': '1.1', '--nwk-key': wrappedEnvelope('provisioning', randomBytes(16), nwkKey) }),
        1,
        /--nwk-key: .*does not unwrap/,
      );
    });

    it('malformed envelope JSON is refused (exit 1)', async () => {
      await refused(device({ '--app-key': '{"KEKLabel":"provisioning","AESKey":' }), 1, /--app-key must be a TS002 KeyEnvelope JSON object/);
      await refused(device({ '--app-key': JSON.stringify({ KEKLabel: 'provisioning', AESKey: 'not hex' }) }), 1, /AESKey/);
      await refused(device({ '--app-key': JSON.stringify({ KEKLabel: 'provisioning', AESKey: randomBytes(16).toString('hex') }) }), 1, /24-byte RFC 3394 wrap/);
    });

    it('a malformed DevEUI is refused (exit 1)', async () => {
      await refused(device({ '--dev-eui': '0004A30B001C05' }), 1, /--dev-eui must be 8 bytes/);
      await refused(device({ '--dev-eui': '0004A30B001C05ZZ' }), 1, /--dev-eui is not valid hex/);
    });

    it('an unsupported LoRaWAN version ("1.2") is refused (exit 1)', async () => {
      await refused(device({ '--mac-version': '1.2' }), 1, /--mac-version "1\.2" is not a LoRaWAN version this server supports/);
    });

    it('a 1.1 device without --nwk-key is refused (exit 1)', async () => {
      await refused(device({ '--mac-version': '1.1' }), 1, /give --nwk-key as well as --app-key/);
    });

    it('a 1.0.3 device with --nwk-key is refused (exit 1)', async () => {
      await refused(device({ '--nwk-key': wrappedEnvelope('provisioning', provisioningKek, nwkKey) }), 1, /omit --nwk-key/);
    });

    it('a duplicate device is refused (exit 1)', async () => {
      await refused(device({ '--dev-eui': DEV_103.devEui }), 1, /device 0004A30B001C0530 already exists/);
    });

    it('a missing required option is a usage error (non-zero exit) naming the option', async () => {
      const r = await runCli(['device', 'add', ...dd, '--dev-eui', '0004A30B001C0599']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /required option '--join-eui <hex>' not specified/);
    });

    it('device show of an unknown device is refused (exit 1)', async () => {
      await refused(['device', 'show', ...dd, '--dev-eui', '0004A30B001C0599'], 1, /no device 0004A30B001C0599/);
    });
  });
});
