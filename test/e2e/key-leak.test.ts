import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aes128EcbEncrypt, aesCmac, aesKeyUnwrap } from '../../src/custody/primitives.js';
import {
  type Eui64,
  JOIN_REQ_TYPE,
  type JoinReqType,
  type NetId,
  decodeJoinAcceptPlaintext,
  encodeJoinRequestMicInput,
  encodeRejoinRequestMicInput,
  eui64FromBeHex,
  joinAcceptMicInput11,
  legacySessionKeyBlock,
  lifetimeKeyBlock,
  lorawan11SessionKeyBlock,
  netIdFromBeHex,
} from '../../src/protocol/index.js';
import { CLI, type CliResult, cliEnv, runCli, tempRoot, wrappedEnvelope, writeSecretFile } from '../helpers/cli-run.js';
import { type Secret, describeFindings, encodings, findSecrets, needle, plant } from '../helpers/keys-search.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { projectRoot } from '../helpers/vectors.js';

/*
 * Proof that no root key, KEK, session key, lifetime key or master key leaves custody in clear: provisioned
 * through the CLI, activated through real HTTP against `joinkeep serve` logging at debug level, then every
 * captured byte (HTTP answers, server and CLI output, data directory files, a pg_dump) is searched for every
 * secret in hex (both cases), base64, raw bytes and JSON byte lists. The master key may appear in master.key only.
 * Session keys may appear only wrapped: the test unwraps them with its own KEKs, and also derives them from the
 * root keys as the device does, and both must agree.
 */

const JOIN_EUI = '70B3D57ED0000001';
const HOME_NET = '000013';
const VISITED_NET = '000042';
const DEV_103 = '0004A30B001C0530';
const DEV_11 = '0004A30B001C0531';
const DEV_STRANDED = '0004A30B001C0532'; // home network 000042, whose NS has neither a KEK nor clear permission
const DEV_ADDR = '26011A2B';

interface Envelope { KEKLabel: string; AESKey: string }
type Answer = Record<string, unknown> & { Result?: { ResultCode?: string; Description?: string } };

function mic(key: Buffer, input: Buffer): Buffer {
  return aesCmac(key, input).subarray(0, 4);
}

function derive(root: Buffer, block: Buffer): Buffer {
  return aes128EcbEncrypt(root, block);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      s.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function pgDumpPath(): Promise<string> {
  const versions = (await readdir('/usr/lib/postgresql').catch(() => [] as string[])).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const p = `/usr/lib/postgresql/${v}/bin/pg_dump`;
    if (await stat(p).then(() => true, () => false)) return p;
  }
  throw new Error('pg_dump not found under /usr/lib/postgresql/*/bin (it is installed with the PostgreSQL server)');
}

async function pgDump(url: string): Promise<Buffer> {
  const bin = await pgDumpPath();
  return new Promise((resolve, reject) => {
    execFile(bin, ['--no-owner', '--dbname', url], { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`pg_dump failed: ${error.message}\n${stderr.toString()}`));
      else resolve(stdout);
    });
  });
}

/** `joinkeep serve` as a child process, every byte of its stdout and stderr kept. */
class Server {
  readonly stdout: Buffer[] = [];
  readonly stderr: Buffer[] = [];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  child: ChildProcess | undefined;
  url = '';

  async start(dataDir: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const child = spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`], {
        cwd: projectRoot(),
        env: cliEnv({ JOINKEEP_LOG_LEVEL: 'debug' }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.child = child;
      child.stdout.on('data', (b: Buffer) => this.stdout.push(b));
      child.stderr.on('data', (b: Buffer) => this.stderr.push(b));
      this.exit = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      this.url = `http://127.0.0.1:${port}`;
      const ready = await this.#waitReady();
      if (ready) return;
      if (attempt === 3) throw new Error(`joinkeep serve did not start:\n${this.output()}`);
    }
  }

  async #waitReady(): Promise<boolean> {
    const deadline = Date.now() + 60_000;
    let exited = false;
    void this.exit?.then(() => (exited = true));
    while (Date.now() < deadline && !exited) {
      const ok = await fetch(`${this.url}/healthz`).then((r) => r.ok, () => false);
      if (ok) return true;
      await new Promise((r) => setTimeout(r, 200));
    }
    if (!exited) throw new Error(`joinkeep serve is not answering /healthz after 60 s:\n${this.output()}`);
    return false;
  }

  output(): string {
    return Buffer.concat([...this.stdout, ...this.stderr]).toString('utf8');
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.child || !this.exit) throw new Error('not started');
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('joinkeep serve did not stop within 30 s of SIGTERM')), 30_000).unref());
    return Promise.race([this.exit, timeout]);
  }
}

for (const backendName of ['sqlite', 'postgres'] as const) {
  describe(`key leak / ${backendName}`, () => {
    let tmp: Awaited<ReturnType<typeof tempRoot>>;
    let dataDir: string;
    let dbUrl: string | undefined;
    let dropDb: (() => Promise<void>) | undefined;
    const server = new Server();

    // Secrets of this run. Random, so a hit cannot be a coincidence with vector constants in the code.
    const provisioningKek = randomBytes(16);
    const nsKek = randomBytes(16);
    const asKek = randomBytes(16);
    const appKey103 = randomBytes(16);
    const appKey11 = randomBytes(16);
    const nwkKey11 = randomBytes(16);
    const appKeyStranded = randomBytes(16);
    const nsToken = randomBytes(32);
    const asToken = randomBytes(32);
    const visitorToken = randomBytes(32);
    let masterKey: Buffer;
    const jsIntKey = derive(nwkKey11, lifetimeKeyBlock('JSIntKey', eui64FromBeHex(DEV_11)));
    const jsEncKey = derive(nwkKey11, lifetimeKeyBlock('JSEncKey', eui64FromBeHex(DEV_11)));

    /** Session keys as obtained by unwrapping the answers, by name. Filled in by the activation tests. */
    const sessionKeys: Secret[] = [];
    /** SessionKeyID → the device and the AppSKey unwrapped from its JoinAns/RejoinAns. */
    const appSKeyBySession = new Map<string, { devEui: string; key: Buffer }>();
    const httpBodies: { what: string; body: string }[] = [];
    const cliOutputs: CliResult[] = [];

    const secretsExceptMaster = (): Secret[] => [
      { name: 'provisioning KEK', bytes: provisioningKek },
      { name: 'NS KEK', bytes: nsKek },
      { name: 'AS KEK', bytes: asKek },
      { name: `AppKey of ${DEV_103}`, bytes: appKey103 },
      { name: `AppKey of ${DEV_11}`, bytes: appKey11 },
      { name: `NwkKey of ${DEV_11}`, bytes: nwkKey11 },
      { name: `AppKey of ${DEV_STRANDED}`, bytes: appKeyStranded },
      { name: `JSIntKey of ${DEV_11}`, bytes: jsIntKey },
      { name: `JSEncKey of ${DEV_11}`, bytes: jsEncKey },
      { name: 'NS bearer token', bytes: nsToken },
      { name: 'AS bearer token', bytes: asToken },
      { name: 'visited NS bearer token', bytes: visitorToken },
      ...sessionKeys,
    ];
    const allSecrets = (): Secret[] => [...secretsExceptMaster(), { name: 'master key', bytes: masterKey }];

    async function cli(args: string[], env?: Record<string, string>): Promise<CliResult> {
      const r = await runCli(args, env ? { env } : {});
      cliOutputs.push(r);
      return r;
    }
    async function cliOk(args: string[]): Promise<CliResult> {
      const r = await cli(args);
      assert.equal(r.code, 0, `joinkeep ${args.join(' ')} failed: ${r.stderr}`);
      return r;
    }

    async function post(what: string, body: unknown, token: Buffer | string | undefined): Promise<Answer> {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (token !== undefined) headers['authorization'] = `Bearer ${typeof token === 'string' ? token : token.toString('hex')}`;
      const res = await fetch(server.url, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
      const text = await res.text();
      httpBodies.push({ what, body: text });
      assert.equal(res.status, 200, `${what}: HTTP ${res.status} ${text}`);
      return JSON.parse(text) as Answer;
    }

    const header = (messageType: string, senderId: string, transactionId: number) => ({
      ProtocolVersion: '1.0',
      SenderID: senderId,
      ReceiverID: JOIN_EUI,
      TransactionID: transactionId,
      MessageType: messageType,
    });

    function joinReq(devEui: string, root: Buffer, devNonce: number, macVersion: string, transactionId: number, options: { flipMic?: boolean; dlSettings?: string; sender?: string } = {}) {
      const input = encodeJoinRequestMicInput({ joinEui: eui64FromBeHex(JOIN_EUI), devEui: eui64FromBeHex(devEui), devNonce });
      const m = mic(root, input);
      if (options.flipMic) m[0] = (m[0] ?? 0) ^ 0xff;
      return {
        ...header('JoinReq', options.sender ?? HOME_NET, transactionId),
        MACVersion: macVersion,
        PHYPayload: Buffer.concat([input, m]).toString('hex').toUpperCase(),
        DevEUI: devEui,
        DevAddr: DEV_ADDR,
        DLSettings: options.dlSettings ?? '00',
        RxDelay: 1,
      };
    }

    /** Opens a Join-accept as the device does (AES encrypt undoes the JS's AES decrypt) and checks its MIC. */
    function openAccept(phyHex: string, encKey: Buffer, micCheck: { legacyKey: Buffer } | { jsIntKey: Buffer; joinReqType: JoinReqType; devNonce: number }) {
      const phy = Buffer.from(phyHex, 'hex');
      const plain = Buffer.concat([phy.subarray(0, 1), aes128EcbEncrypt(encKey, phy.subarray(1))]);
      const accept = decodeJoinAcceptPlaintext(plain);
      const expected =
        'legacyKey' in micCheck
          ? mic(micCheck.legacyKey, accept.body)
          : mic(micCheck.jsIntKey, joinAcceptMicInput11({ joinReqType: micCheck.joinReqType, joinEui: eui64FromBeHex(JOIN_EUI), devNonce: micCheck.devNonce }, accept.body));
      assert.deepEqual(accept.mic, expected, 'the Join-accept MIC verifies as the device checks it');
      return accept;
    }

    function unwrap(answer: Answer, field: string, kek: Buffer, label: string): Buffer {
      const e = answer[field] as Envelope | undefined;
      assert.ok(e, `${field} is in the answer`);
      assert.equal(e.KEKLabel, label, `${field} is wrapped under ${label}`);
      assert.match(e.AESKey, /^[0-9A-F]{48}$/, `${field} is a 24-byte RFC 3394 wrap`);
      return aesKeyUnwrap(kek, Buffer.from(e.AESKey, 'hex'));
    }

    function remember(name: string, key: Buffer): void {
      sessionKeys.push({ name, bytes: key });
    }

    before(async () => {
      tmp = await tempRoot('joinkeep-leak-');
      dataDir = tmp.dataDir;
      const dd = ['--data-dir', dataDir];
      const initArgs: string[] = [];
      if (backendName === 'postgres') {
        const db = await createTestDatabase();
        dbUrl = db.url;
        dropDb = () => db.drop();
        initArgs.push('--storage', 'postgres', '--postgres-url', db.url);
      }
      await cliOk(['init', ...dd, ...initArgs]);
      masterKey = Buffer.from((await readFile(join(dataDir, 'master.key'), 'utf8')).trim(), 'hex');
      assert.equal(masterKey.length, 32);

      await cliOk(['kek', 'add', ...dd, '--label', 'provisioning', '--key-file', await writeSecretFile(tmp.root, 'prov.kek', provisioningKek.toString('hex'))]);
      await cliOk(['kek', 'add', ...dd, '--label', 'ns-kek', '--key-file', await writeSecretFile(tmp.root, 'ns.kek', nsKek.toString('hex'))]);
      await cliOk(['kek', 'add', ...dd, '--label', 'as-kek', '--key-file', await writeSecretFile(tmp.root, 'as.kek', asKek.toString('hex').toUpperCase())]);
      await cliOk(['peer', 'add-ns', ...dd, '--net-id', HOME_NET, '--token-file', await writeSecretFile(tmp.root, 'ns.token', nsToken.toString('hex')), '--kek-label', 'ns-kek']);
      await cliOk(['peer', 'add-as', ...dd, '--as-id', 'as-1', '--token-file', await writeSecretFile(tmp.root, 'as.token', asToken.toString('hex')), '--kek-label', 'as-kek']);
      await cliOk(['peer', 'add-ns', ...dd, '--net-id', VISITED_NET, '--token-file', await writeSecretFile(tmp.root, 'visitor.token', visitorToken.toString('hex'))]);
      const device = ['device', 'add', ...dd, '--join-eui', JOIN_EUI, '--as-id', 'as-1'];
      await cliOk([...device, '--dev-eui', DEV_103, '--mac-version', '1.0.3', '--home-net-id', HOME_NET, '--app-key', wrappedEnvelope('provisioning', provisioningKek, appKey103)]);
      await cliOk([
        ...device, '--dev-eui', DEV_11, '--mac-version', '1.1', '--home-net-id', HOME_NET, '--roaming-net-ids', VISITED_NET,
        '--app-key', wrappedEnvelope('provisioning', provisioningKek, appKey11), '--nwk-key', wrappedEnvelope('provisioning', provisioningKek, nwkKey11),
      ]);
      await cliOk([...device, '--dev-eui', DEV_STRANDED, '--mac-version', '1.0.3', '--home-net-id', VISITED_NET, '--app-key', wrappedEnvelope('provisioning', provisioningKek, appKeyStranded)]);

      await server.start(dataDir);
    });

    after(async () => {
      if (server.child && server.child.exitCode === null && server.child.signalCode === null) await server.stop().catch(() => undefined);
      await tmp?.cleanup();
      await dropDb?.();
    });

    describe('activations the device and its servers can use', () => {
      it('JoinReq of a 1.0.3 device: the device opens the accept with its AppKey; NwkSKey/AppSKey unwrap to what the device derives', async () => {
        const devNonce = 0x3a11;
        const a = await post('JoinReq 1.0.3', joinReq(DEV_103, appKey103, devNonce, '1.0.3', 1), nsToken);
        assert.equal(a.Result?.ResultCode, 'Success', JSON.stringify(a));
        const accept = openAccept(String(a['PHYPayload']), appKey103, { legacyKey: appKey103 });
        assert.equal(accept.netId, HOME_NET);
        const input = { joinNonce: accept.joinNonce, netId: netIdFromBeHex(HOME_NET), devNonce };
        const nwkSKey = unwrap(a, 'NwkSKey', nsKek, 'ns-kek');
        const appSKey = unwrap(a, 'AppSKey', asKek, 'as-kek');
        assert.deepEqual(nwkSKey, derive(appKey103, legacySessionKeyBlock('NwkSKey', input)));
        assert.deepEqual(appSKey, derive(appKey103, legacySessionKeyBlock('AppSKey', input)));
        remember(`NwkSKey of ${DEV_103} (join)`, nwkSKey);
        remember(`AppSKey of ${DEV_103} (join)`, appSKey);
        appSKeyBySession.set(String(a['SessionKeyID']), { devEui: DEV_103, key: appSKey });
      });

      it('JoinReq of a 1.1 device (OptNeg=1): accept under NwkKey with a JSIntKey MIC; four session keys unwrap to the device\'s', async () => {
        const devNonce = 1;
        const a = await post('JoinReq 1.1', joinReq(DEV_11, nwkKey11, devNonce, '1.1', 2, { dlSettings: '80' }), nsToken);
        assert.equal(a.Result?.ResultCode, 'Success', JSON.stringify(a));
        const accept = openAccept(String(a['PHYPayload']), nwkKey11, { jsIntKey, joinReqType: JOIN_REQ_TYPE.joinRequest, devNonce });
        assert.equal(accept.dlSettings & 0x80, 0x80, 'OptNeg set');
        const input = { joinNonce: accept.joinNonce, joinEui: eui64FromBeHex(JOIN_EUI) as Eui64, devNonce };
        for (const [field, root, kek, label] of [
          ['FNwkSIntKey', nwkKey11, nsKek, 'ns-kek'],
          ['SNwkSIntKey', nwkKey11, nsKek, 'ns-kek'],
          ['NwkSEncKey', nwkKey11, nsKek, 'ns-kek'],
          ['AppSKey', appKey11, asKek, 'as-kek'],
        ] as const) {
          const key = unwrap(a, field, kek, label);
          assert.deepEqual(key, derive(root, lorawan11SessionKeyBlock(field, input)), field);
          remember(`${field} of ${DEV_11} (join, OptNeg=1)`, key);
          if (field === 'AppSKey') appSKeyBySession.set(String(a['SessionKeyID']), { devEui: DEV_11, key });
        }
        assert.equal(a['NwkSKey'], undefined);
      });

      it('JoinReq of the 1.1 device on a 1.0.3 network (OptNeg=0): NwkSKey and AppSKey both from NwkKey', async () => {
        const devNonce = 2;
        const a = await post('JoinReq 1.1 as 1.0.3', joinReq(DEV_11, nwkKey11, devNonce, '1.0.3', 3), nsToken);
        assert.equal(a.Result?.ResultCode, 'Success', JSON.stringify(a));
        const accept = openAccept(String(a['PHYPayload']), nwkKey11, { legacyKey: nwkKey11 });
        const input = { joinNonce: accept.joinNonce, netId: netIdFromBeHex(HOME_NET) as NetId, devNonce };
        const nwkSKey = unwrap(a, 'NwkSKey', nsKek, 'ns-kek');
        const appSKey = unwrap(a, 'AppSKey', asKek, 'as-kek');
        assert.deepEqual(nwkSKey, derive(nwkKey11, legacySessionKeyBlock('NwkSKey', input)));
        assert.deepEqual(appSKey, derive(nwkKey11, legacySessionKeyBlock('AppSKey', input)));
        remember(`NwkSKey of ${DEV_11} (join, OptNeg=0)`, nwkSKey);
        remember(`AppSKey of ${DEV_11} (join, OptNeg=0)`, appSKey);
        appSKeyBySession.set(String(a['SessionKeyID']), { devEui: DEV_11, key: appSKey });
      });

      it('RejoinReq type 1 of the 1.1 device: accept under JSEncKey, keys with RJcount1 in the DevNonce slot', async () => {
        const rjCount1 = 0;
        const input = encodeRejoinRequestMicInput({ rejoinType: 1, joinEui: eui64FromBeHex(JOIN_EUI), devEui: eui64FromBeHex(DEV_11), rjCount1 });
        const body = {
          ...header('RejoinReq', HOME_NET, 4),
          MACVersion: '1.1',
          PHYPayload: Buffer.concat([input, mic(jsIntKey, input)]).toString('hex').toUpperCase(),
          DevEUI: DEV_11,
          DevAddr: DEV_ADDR,
          DLSettings: '80',
          RxDelay: 1,
        };
        const a = await post('RejoinReq type 1', body, nsToken);
        assert.equal(a.Result?.ResultCode, 'Success', JSON.stringify(a));
        assert.equal(a['MessageType'], 'RejoinAns');
        const accept = openAccept(String(a['PHYPayload']), jsEncKey, { jsIntKey, joinReqType: JOIN_REQ_TYPE.rejoin1, devNonce: rjCount1 });
        const keyInput = { joinNonce: accept.joinNonce, joinEui: eui64FromBeHex(JOIN_EUI) as Eui64, devNonce: rjCount1 };
        for (const [field, root, kek, label] of [
          ['FNwkSIntKey', nwkKey11, nsKek, 'ns-kek'],
          ['SNwkSIntKey', nwkKey11, nsKek, 'ns-kek'],
          ['NwkSEncKey', nwkKey11, nsKek, 'ns-kek'],
          ['AppSKey', appKey11, asKek, 'as-kek'],
        ] as const) {
          const key = unwrap(a, field, kek, label);
          assert.deepEqual(key, derive(root, lorawan11SessionKeyBlock(field, keyInput)), field);
          remember(`${field} of ${DEV_11} (rejoin type 1)`, key);
          if (field === 'AppSKey') appSKeyBySession.set(String(a['SessionKeyID']), { devEui: DEV_11, key });
        }
        // Replaying the same Rejoin-request is refused.
        const replay = await post('RejoinReq type 1 replay', { ...body, TransactionID: 5 }, nsToken);
        assert.equal(replay.Result?.ResultCode, 'JoinReqFailed');
      });

      it('AppSKeyReq from the AS: every session\'s AppSKey comes back wrapped under the AS KEK and equals the JoinAns one', async () => {
        assert.ok(appSKeyBySession.size >= 4, 'the activation tests ran');
        let tx = 10;
        for (const [sessionKeyId, { devEui, key: expected }] of appSKeyBySession) {
          const a = await post('AppSKeyReq', { ...header('AppSKeyReq', 'as-1', tx++), DevEUI: devEui, SessionKeyID: sessionKeyId }, asToken);
          assert.equal(a.Result?.ResultCode, 'Success', JSON.stringify(a));
          assert.deepEqual(unwrap(a, 'AppSKey', asKek, 'as-kek'), expected);
        }
      });

      it('HomeNSReq from the home and from a visited network names the home NetID', async () => {
        const home = await post('HomeNSReq home', { ...header('HomeNSReq', HOME_NET, 20), DevEUI: DEV_103 }, nsToken);
        assert.equal(home.Result?.ResultCode, 'Success', JSON.stringify(home));
        assert.equal(home['HNetID'], HOME_NET);
        const visited = await post('HomeNSReq visited', { ...header('HomeNSReq', VISITED_NET, 21), DevEUI: DEV_11 }, visitorToken);
        assert.equal(visited.Result?.ResultCode, 'Success', JSON.stringify(visited));
        assert.equal(visited['HNetID'], HOME_NET);
      });
    });

    describe('failing requests (their descriptions and logs are searched too)', () => {
      it('bad MIC → MICFailed', async () => {
        const a = await post('JoinReq bad MIC', joinReq(DEV_103, appKey103, 0x3a12, '1.0.3', 30, { flipMic: true }), nsToken);
        assert.equal(a.Result?.ResultCode, 'MICFailed');
      });

      it('replayed DevNonce → JoinReqFailed', async () => {
        const a = await post('JoinReq replay', joinReq(DEV_103, appKey103, 0x3a11, '1.0.3', 31), nsToken);
        assert.equal(a.Result?.ResultCode, 'JoinReqFailed');
      });

      it('malformed JSON → MalformedRequest', async () => {
        const a = await post('malformed JSON', `{"ProtocolVersion":"1.0","MessageType":"JoinReq","SenderID":"${HOME_NET}","PHYPayload":`, nsToken);
        assert.equal(a.Result?.ResultCode, 'MalformedRequest');
      });

      it('unknown sender (unregistered token) → UnknownSender', async () => {
        const a = await post('JoinReq unknown sender', joinReq(DEV_103, appKey103, 0x3a13, '1.0.3', 32), randomBytes(32));
        assert.equal(a.Result?.ResultCode, 'UnknownSender');
        const none = await post('JoinReq no credentials', joinReq(DEV_103, appKey103, 0x3a14, '1.0.3', 33), undefined);
        assert.equal(none.Result?.ResultCode, 'UnknownSender');
      });

      it('keys undeliverable (home NS with neither a KEK nor clear permission) → JoinReqFailed', async () => {
        const a = await post('JoinReq undeliverable', joinReq(DEV_STRANDED, appKeyStranded, 7, '1.0.3', 34, { sender: VISITED_NET }), visitorToken);
        assert.equal(a.Result?.ResultCode, 'JoinReqFailed', JSON.stringify(a));
        assert.match(a.Result?.Description ?? '', /no KEK and clear session keys are not allowed/);
      });

      it('a visited network may not activate the device → ActivationDisallowed', async () => {
        const a = await post('JoinReq visited', joinReq(DEV_11, nwkKey11, 9, '1.1', 35, { sender: VISITED_NET }), visitorToken);
        assert.equal(a.Result?.ResultCode, 'ActivationDisallowed');
      });

      it('AppSKeyReq for an unknown session → UnknownDevEUI; from a network server token → UnknownSender', async () => {
        const a = await post('AppSKeyReq unknown session', { ...header('AppSKeyReq', 'as-1', 36), DevEUI: DEV_103, SessionKeyID: '00112233' }, asToken);
        assert.equal(a.Result?.ResultCode, 'UnknownDevEUI');
        const [sessionKeyId] = appSKeyBySession.keys();
        const b = await post('AppSKeyReq from NS', { ...header('AppSKeyReq', 'as-1', 37), DevEUI: DEV_103, SessionKeyID: sessionKeyId ?? '00' }, nsToken);
        assert.equal(b.Result?.ResultCode, 'UnknownSender');
      });

      it('GET /metrics answers (its body is searched too)', async () => {
        const res = await fetch(`${server.url}/metrics`);
        const text = await res.text();
        httpBodies.push({ what: 'GET /metrics', body: text });
        assert.equal(res.status, 200);
        assert.match(text, /# HELP/);
      });
    });

    describe('CLI refusals (stderr captured)', () => {
      it('a clear root key envelope, a wrong KEK, a duplicate KEK, a malformed KEK file and other refusals, also with JOINKEEP_DEBUG=1', async () => {
        const dd = ['--data-dir', dataDir];
        const device = ['device', 'add', ...dd, '--dev-eui', '0004A30B001C05FF', '--join-eui', JOIN_EUI, '--mac-version', '1.0.3', '--home-net-id', HOME_NET];
        const refusals: [string[], Record<string, string>?][] = [
          [[...device, '--app-key', JSON.stringify({ KEKLabel: '', AESKey: appKey103.toString('hex').toUpperCase() })]],
          [[...device, '--app-key', JSON.stringify({ KEKLabel: '', AESKey: appKey103.toString('hex').toUpperCase() })], { JOINKEEP_DEBUG: '1' }],
          [[...device, '--app-key', wrappedEnvelope('provisioning', nsKek, appKey11)]],
          [[...device, '--app-key', wrappedEnvelope('provisioning', nsKek, appKey11)], { JOINKEEP_DEBUG: '1' }],
          [[...device, '--app-key', JSON.stringify({ KEKLabel: 'provisioning', AESKey: nwkKey11.toString('hex') })]],
          [[...device, '--app-key', `{"KEKLabel":"provisioning","AESKey":"${appKey11.toString('hex')}`]],
          [['kek', 'add', ...dd, '--label', 'ns-kek', '--key-file', join(tmp.root, 'ns.kek')]],
          [['kek', 'add', ...dd, '--label', 'longer', '--key-file', await writeSecretFile(tmp.root, 'long.kek', `${asKek.toString('hex')}ab`)]],
          [['kek', 'add', ...dd, '--label', 'nothex', '--key-file', await writeSecretFile(tmp.root, 'nothex.kek', `${provisioningKek.toString('hex').slice(2)}zz`)]],
          [['peer', 'add-ns', ...dd, '--net-id', '000099', '--token-file', join(tmp.root, 'ns.token'), '--kek-label', 'ns-kek']],
          [['peer', 'add-ns', ...dd, '--net-id', '000099', '--token-file', join(tmp.root, 'prov.kek'), '--kek-label', 'missing']],
          [['init', ...dd]],
          [['device', 'show', ...dd, '--dev-eui', '0004A30B001C05FF']],
        ];
        for (const [args, env] of refusals) {
          const r = await cli(args, env);
          assert.notEqual(r.code, 0, `joinkeep ${args.join(' ')} should be refused`);
          assert.match(r.stderr, /error/);
        }
      });
    });

    describe('no secret in clear anywhere', () => {
      it('self-check: the search finds a planted key in every encoding, and nothing in clean filler', () => {
        const key = randomBytes(16);
        const filler = randomBytes(4096);
        assert.deepEqual(findSecrets(filler, [{ name: 'k', bytes: key }], 'filler'), []);
        for (const e of encodings) {
          const found = findSecrets(plant(key, e, filler), [{ name: 'k', bytes: key }], `sample ${e}`);
          assert.ok(found.some((f) => f.encoding === e), `a key planted in ${e} is found`);
          // The same works through the string path used for text captures.
          if (e !== 'raw') assert.ok(findSecrets(plant(key, e, Buffer.from('log line ')).toString('latin1'), [{ name: 'k', bytes: key }], e).length > 0);
        }
        // A pino log line with a Buffer or a hex key is caught.
        assert.ok(findSecrets(JSON.stringify({ level: 20, msg: 'x', k: key }), [{ name: 'k', bytes: key }], 'pino').length > 0);
        assert.ok(findSecrets(`{"msg":"wrap ${needle(key, 'hex-upper').toString()}"}`, [{ name: 'k', bytes: key }], 'pino').length > 0);
        // And in a real captured body: plant a session key into a copy of one answer.
        const sample = httpBodies[0]?.body ?? '{}';
        assert.ok(findSecrets(`${sample}${sessionKeys[0]?.bytes.toString('base64') ?? key.toString('base64')}`, [...sessionKeys, { name: 'k', bytes: key }], 'planted').length > 0);
      });

      it('every session key of the run was captured for the search (12 keys from 4 activations)', () => {
        assert.equal(sessionKeys.length, 2 + 4 + 2 + 4);
        for (const s of sessionKeys) assert.equal(s.bytes.length, 16, s.name);
      });

      it('every KeyEnvelope in every HTTP answer is wrapped (non-empty KEKLabel, 24-byte AESKey)', () => {
        let envelopes = 0;
        const visit = (v: unknown): void => {
          if (Array.isArray(v)) v.forEach(visit);
          else if (typeof v === 'object' && v !== null) {
            const o = v as Record<string, unknown>;
            if ('AESKey' in o) {
              envelopes++;
              assert.notEqual(o['KEKLabel'], '', 'a clear KeyEnvelope was sent');
              assert.match(String(o['AESKey']), /^[0-9A-F]{48}$/);
            }
            Object.values(o).forEach(visit);
          }
        };
        for (const b of httpBodies) if (b.what !== 'GET /metrics') visit(JSON.parse(b.body));
        assert.ok(envelopes >= 2 + 4 + 2 + 4 + 4, `saw ${envelopes} envelopes`);
      });

      it('HTTP answer bodies (successes, refusals, /metrics) carry no secret', () => {
        assert.ok(httpBodies.length >= 15);
        const findings = httpBodies.flatMap((b) => findSecrets(b.body, allSecrets(), `HTTP answer to ${b.what}`));
        assert.deepEqual(findings, [], describeFindings(findings));
      });

      it('CLI stdout and stderr carry no secret', () => {
        assert.ok(cliOutputs.length >= 20);
        const findings = cliOutputs.flatMap((r, i) => [
          ...findSecrets(r.stdout, allSecrets(), `stdout of CLI run #${i} (${r.args.slice(0, 2).join(' ')})`),
          ...findSecrets(r.stderr, allSecrets(), `stderr of CLI run #${i} (${r.args.slice(0, 2).join(' ')})`),
        ]);
        assert.deepEqual(findings, [], describeFindings(findings));
      });

      it('the server\'s debug-level stdout and stderr carry no secret (while running)', () => {
        const out = Buffer.concat(server.stdout);
        assert.match(out.toString('utf8'), /"level":20|backend request/, 'the server logged (the capture is live)');
        assert.match(out.toString('utf8'), /backend request refused/);
        const findings = [
          ...findSecrets(out, allSecrets(), 'server stdout'),
          ...findSecrets(Buffer.concat(server.stderr), allSecrets(), 'server stderr'),
        ];
        assert.deepEqual(findings, [], describeFindings(findings));
      });

      it('data directory files carry no secret while the server runs; the master key is only in master.key', async () => {
        const findings = await searchDataDir();
        assert.deepEqual(findings, [], describeFindings(findings));
      });

      if (backendName === 'postgres') {
        it('a pg_dump of the database carries no secret while the server runs', async () => {
          const dump = await pgDump(dbUrl!);
          assert.match(dump.toString('utf8'), /key_records/, 'the dump holds the sealed key table');
          const findings = findSecrets(dump, allSecrets(), 'pg_dump');
          assert.deepEqual(findings, [], describeFindings(findings));
        });
      }

      it('the server stops cleanly on SIGTERM, and its complete output carries no secret', async () => {
        const { code, signal } = await server.stop();
        assert.equal(signal, null, 'exited by itself after SIGTERM');
        assert.equal(code, 0);
        const findings = [
          ...findSecrets(Buffer.concat(server.stdout), allSecrets(), 'server stdout'),
          ...findSecrets(Buffer.concat(server.stderr), allSecrets(), 'server stderr'),
        ];
        assert.deepEqual(findings, [], describeFindings(findings));
      });

      it('after the server stopped (SQLite WAL checkpointed), data directory files carry no secret', async () => {
        assert.notEqual(server.child?.exitCode, null, 'the server has exited');
        const findings = await searchDataDir();
        assert.deepEqual(findings, [], describeFindings(findings));
        if (backendName === 'sqlite') {
          // Prove the database really holds the provisioned state the search ran over.
          const db = await readFile(join(dataDir, 'joinkeep.db'));
          assert.ok(db.includes(Buffer.from(DEV_11)), 'the device rows are in joinkeep.db');
          assert.ok(db.includes(Buffer.from('root/')), 'the sealed key records are in joinkeep.db');
        }
      });

      if (backendName === 'postgres') {
        it('after the server stopped, a pg_dump carries no secret', async () => {
          const findings = findSecrets(await pgDump(dbUrl!), allSecrets(), 'pg_dump');
          assert.deepEqual(findings, [], describeFindings(findings));
        });
      }
    });

    async function searchDataDir() {
      const files = await readdir(dataDir);
      assert.ok(files.includes('joinkeep.json') && files.includes('master.key'));
      if (backendName === 'sqlite') assert.ok(files.includes('joinkeep.db'));
      const findings: ReturnType<typeof findSecrets> = [];
      for (const f of files) {
        const bytes = await readFile(join(dataDir, f));
        if (f === 'master.key') {
          // Sanity: the search does find the master key where it legitimately is.
          assert.ok(findSecrets(bytes, [{ name: 'master key', bytes: masterKey }], f).length > 0, 'the master key is found in master.key');
          findings.push(...findSecrets(bytes, secretsExceptMaster(), f));
        } else {
          findings.push(...findSecrets(bytes, allSecrets(), f));
        }
      }
      return findings;
    }
  });
}
