import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { openJoinkeep } from '../../src/app/joinkeep.js';
import { type MacVersion, devAddrFromLeBytes, eui64FromBeHex, isLoRaWAN11, netIdFromBeHex } from '../../src/protocol/index.js';
import type { SentHeader } from '../../sim/answer-checks.js';
import { ApplicationServerClient } from '../../sim/application-server.js';
import { processJoinAccept } from '../../sim/device-accept.js';
import type { SessionKeys } from '../../sim/device-keys.js';
import { SimulatedDevice, uniqueRandomDevNonces } from '../../sim/device.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { addFleet } from '../../sim/add-fleet.js';
import { type ActivationAnswer, type Failure, NetworkServerClient, type NsSessionKeys } from '../../sim/network-server.js';
import { postTs002 } from '../../sim/ts002-transport.js';
import { cliEnv, cliOk, tempRoot, writeSecretFile } from '../helpers/cli-run.js';
import { createTestDatabase } from '../helpers/postgres.js';

/*
 * Scale-out (issue 7): three `joinkeep serve` processes — three "machines", each with its own data directory holding
 * the same joinkeep.json — on one PostgreSQL database, sharing nothing but the database and the software keystore's
 * master key (from an environment variable, as separate machines would get it). Every Join-request and
 * Rejoin-request of the fleet is sent to all three at the same moment, as NS retries and roaming duplicates arrive
 * behind a load balancer without stickiness: identical copies, and copies with their own TransactionIDs.
 *
 * The guarantees: exactly one Success per DevNonce (and per RJcount1), the other copies refused with the replay
 * result (JoinReqFailed), never an HTTP error or a timeout; every JoinNonce of a device used once, contiguous from 1;
 * the device accepts every accept it is given (1.1: JoinNonce greater than the last); and the AppSKey of every
 * session is delivered by each of the three instances (AppSKeyReq by SessionKeyID), equal to what the device derived.
 * Rejoin types 0/2 carry no nonce the Join Server could check (their MIC is under SNwkSIntKey, RJcount0 is the home
 * NS's to verify, TS002-1.0 §11.4.1 step 7), so each copy is a fresh activation: each gets its own JoinNonce.
 * Finally PostgreSQL itself is asked: no (dev_eui, join_nonce) twice in sessions, counters equal to the successes.
 */

const MASTER_KEY_ENV = 'JK_SCALE_OUT_MASTER_KEY';
const JOIN_EUI = eui64FromBeHex('70B3D57ED0005CA1');
const NET_ID = netIdFromBeHex('00005C');
const AS_ID = 'scale-as';
const INSTANCES = 3;
/** 1.0.3 and 1.0.4 a quarter each, 1.1 half. */
const DEVICES = 200;
/** Devices activating at once; each sends its copies to all three instances (3 × this many requests in flight). */
const CONCURRENT_DEVICES = 12;
/** Join rounds per device; a 1.1 device adds rejoins of type 1, 0 and 2 and one more join (10 sessions: the default sessionLimit). */
const JOIN_ROUNDS = 2;

interface Party {
  readonly token: string;
  readonly kek: { readonly label: string; readonly key: Buffer };
}

/** How the three copies of one request differ: not at all (a duplicate), or by TransactionID (an NS retry). */
type Copies = 'identical' | 'retry';

interface Figures {
  setupSeconds: Record<string, number>;
  /** Successes per instance: the copies really race (any instance may win). */
  wins: number[];
  requests: number;
  successes: number;
  refusals: number;
  appSKeyReqs: number;
}

describe('scale-out / three joinkeep serve processes on one PostgreSQL, one master key', { timeout: 120_000 }, () => {
  let root: Awaited<ReturnType<typeof tempRoot>>;
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  const env = { [MASTER_KEY_ENV]: randomBytes(32).toString('hex') };
  const servers: RunningServer[] = [];
  const fleet: SimulatedDevice[] = [];
  const ns: Party = { token: randomBytes(24).toString('hex'), kek: { label: 'ns-00005C', key: randomBytes(16) } };
  const as: Party = { token: randomBytes(24).toString('hex'), kek: { label: 'as-scale', key: randomBytes(16) } };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 3 * CONCURRENT_DEVICES });
  /** JoinNonces of every Success, per device, in the order the answers were read. */
  const joinNonces = new Map<string, number[]>();
  const sessionKeyIds = new Set<string>();
  const figures: Figures = { setupSeconds: {}, wins: Array.from({ length: INSTANCES }, () => 0), requests: 0, successes: 0, refusals: 0, appSKeyReqs: 0 };

  before(async () => {
    let mark = performance.now();
    const lap = (name: string): void => {
      const now = performance.now();
      figures.setupSeconds[name] = Math.round(now - mark) / 1000;
      mark = now;
    };
    root = await tempRoot('joinkeep-scale-out-');
    database = await createTestDatabase();
    const machine = (i: number) => join(root.root, `machine-${i}`);
    const dd = ['--data-dir', machine(0)];
    // The operator's set-up, through the CLI, on the first machine's data directory.
    await cliOk(['init', ...dd, '--storage', 'postgres', '--postgres-url', database.url, '--master-key-env', MASTER_KEY_ENV], { env });
    const importKek = { label: 'factory-import', key: randomBytes(16) };
    // Independent commands run side by side (one database, several CLI processes: also a scale-out case).
    await Promise.all(
      [importKek, ns.kek, as.kek].map(async (k) =>
        cliOk(['kek', 'add', ...dd, '--label', k.label, '--key-file', await writeSecretFile(root.root, `${k.label}.hex`, k.key.toString('hex'))], { env }),
      ),
    );
    await Promise.all([
      cliOk(['peer', 'add-ns', ...dd, '--net-id', NET_ID, '--token-file', await writeSecretFile(root.root, 'ns.token', ns.token), '--kek-label', ns.kek.label], { env }),
      cliOk(['peer', 'add-as', ...dd, '--as-id', AS_ID, '--token-file', await writeSecretFile(root.root, 'as.token', as.token), '--kek-label', as.kek.label], { env }),
    ]);
    lap('cli');
    // The fleet, through the provisioning service `device add` calls (one CLI process per device would be slow).
    for (let i = 0; i < DEVICES; i++) {
      const macVersion: MacVersion = i % 2 === 1 ? '1.1' : i % 4 === 0 ? '1.0.3' : '1.0.4';
      const roots = { appKey: randomBytes(16), ...(macVersion === '1.1' ? { nwkKey: randomBytes(16) } : {}) };
      const devEui = eui64FromBeHex(`5CA1E0${i.toString(16).padStart(10, '0')}`);
      fleet.push(new SimulatedDevice({ devEui, joinEui: JOIN_EUI, macVersion, roots }, undefined, { randomDevNonce: uniqueRandomDevNonces() }));
      joinNonces.set(devEui, []);
    }
    const jk = await openJoinkeep(machine(0), { logger: pino({ level: 'silent' }), env: cliEnv(env) });
    try {
      await addFleet(jk, fleet, { importKek, homeNetId: NET_ID, asId: AS_ID, actor: 'test', parallelism: 4 });
    } finally {
      await jk.close();
    }

    lap('devices');
    // Two more machines: the same joinkeep.json, nothing else (the keys are in PostgreSQL, sealed under the master key).
    for (let i = 1; i < INSTANCES; i++) {
      await mkdir(machine(i), { mode: 0o700 });
      await copyFile(join(machine(0), 'joinkeep.json'), join(machine(i), 'joinkeep.json'));
    }
    // One after the other: each picks a free port just before it binds it.
    for (let i = 0; i < INSTANCES; i++) servers.push(await startServer(machine(i), { extraEnv: env }));
    lap('serve');
  });

  after(async () => {
    agent.destroy();
    await Promise.all(servers.map((s) => s.stop()));
    await database?.drop();
    await root?.cleanup();
  });

  const nsClient = (): NetworkServerClient =>
    // ChirpStack's wire style: ProtocolVersion 1.0 and a random TransactionID per message.
    new NetworkServerClient({ url: 'http://unused.invalid/', token: ns.token, netId: NET_ID, kek: ns.kek, style: 'chirpstack', agent });
  let asClientsMade: ApplicationServerClient[] | undefined;
  /** One application server client per instance. */
  const asClients = (): ApplicationServerClient[] =>
    (asClientsMade ??= servers.map((s) => new ApplicationServerClient({ url: s.url, token: as.token, asId: AS_ID, kek: as.kek, style: 'tts', protocolVersion: '1.0', agent })));

  /** Sends the copies of one request to the three instances at the same moment; every copy must get a TS002 answer. */
  async function race(client: NetworkServerClient, built: { header: SentHeader; message: Record<string, unknown> }, copies: Copies): Promise<(ActivationAnswer | Failure)[]> {
    const sent = servers.map((_, i) => {
      if (copies === 'identical') return built;
      const TransactionID = (built.header.TransactionID + i) % 0x1_0000_0000;
      return { header: { ...built.header, TransactionID }, message: { ...built.message, TransactionID } };
    });
    const responses = await Promise.all(servers.map((s, i) => postTs002({ url: s.url, token: ns.token, agent, timeoutMs: 20_000 }, sent[i]!.message)));
    figures.requests += responses.length;
    return responses.map((res, i) => {
      assert.equal(res.status, 200, `instance ${i}: HTTP ${res.status} ${res.text}`);
      const answer = client.activationAnswer(sent[i]!.header, res);
      assert.deepEqual(answer.issues, [], `instance ${i}: the answer deviates from TS002`);
      if (answer.ok) figures.wins[i]!++;
      return answer;
    });
  }

  /**
   * A Success as the device and the application servers see it: the device accepts the Join-accept, the NS keys and
   * the forwarded AppSKey are what it derived, and AppSKeyReq at each instance returns the same AppSKey.
   */
  async function checkSession(device: SimulatedDevice, answer: ActivationAnswer, keys: SessionKeys, joinNonce: number): Promise<void> {
    const { devEui, joinEui } = device.identity;
    assert.deepEqual(nsKeysOf(keys), answer.nsKeys, `${devEui}: the network session keys are the device's`);
    const forwarded = asClients()[0]!.unwrapForwarded(answer.appSKeyEnvelope);
    assert.ok(forwarded.ok && forwarded.appSKey.equals(keys.appSKey), `${devEui}: the AppSKey in the JoinAns is the device's`);
    const sessionKeyId = answer.sessionKeyId;
    assert.ok(sessionKeyId !== undefined && !sessionKeyIds.has(sessionKeyId), `${devEui}: a new SessionKeyID for JoinNonce ${joinNonce}`);
    sessionKeyIds.add(sessionKeyId);
    const fetched = await Promise.all(asClients().map((c) => c.appSKeyReq(devEui, joinEui, sessionKeyId)));
    figures.appSKeyReqs += fetched.length;
    fetched.forEach((f, i) => {
      assert.ok(f.ok, `${devEui}: AppSKeyReq ${sessionKeyId} at instance ${i}: ${JSON.stringify(f)}`);
      assert.deepEqual(f.issues, []);
      assert.ok(f.appSKey.equals(keys.appSKey), `${devEui}: instance ${i} delivers the AppSKey the device derived`);
    });
    joinNonces.get(devEui)!.push(joinNonce);
  }

  /**
   * One Join-request, or a type 1 Rejoin-request: one Success, the other copies refused as replays; the device
   * accepts. Returns the frame sent.
   */
  async function onceOnly(device: SimulatedDevice, kind: 'join' | 'rejoin1', copies: Copies): Promise<Buffer> {
    const { devEui, macVersion } = device.identity;
    const client = nsClient();
    const request = activationRequest(device, kind === 'join' ? device.joinRequest() : device.rejoinRequest(1));
    const answers = await race(client, kind === 'join' ? client.joinReqMessage(request) : client.rejoinReqMessage(request), copies);
    const successes = answers.filter((a): a is ActivationAnswer => a.ok);
    assert.equal(successes.length, 1, `${devEui} ${kind} (${copies} copies): exactly one Success, got ${summary(answers)}`);
    for (const a of answers) {
      if (a.ok) continue;
      figures.refusals++;
      assert.ok(a.kind === 'result' && a.resultCode === 'JoinReqFailed', `${devEui}: a late copy is refused as a replay, got ${summary([a])}`);
      assert.match(a.description ?? '', kind === 'join' ? /DevNonce \d+ of device .* (not greater|used before)/ : /RJcount1 \d+ of device .* not greater/);
    }
    figures.successes++;
    const outcome = device.receiveJoinAccept(successes[0]!.phyPayload);
    assert.ok(outcome.accepted, `${devEui} (${macVersion}) accepts the Join-accept: ${outcome.accepted ? '' : outcome.detail}`);
    assert.equal(outcome.joinNonce, joinNonces.get(devEui)!.length + 1, `${devEui}: the JoinNonce follows the last one issued by one`);
    await checkSession(device, successes[0]!, outcome.keys, outcome.joinNonce);
    return request.phyPayload;
  }

  /** A type 0 or 2 Rejoin-request: every copy is a new activation with its own JoinNonce; none is reused. */
  async function everyCopy(device: SimulatedDevice, rejoinType: 0 | 2, copies: Copies): Promise<void> {
    const { devEui, joinEui, macVersion, roots } = device.identity;
    const client = nsClient();
    const issued = joinNonces.get(devEui)!.length;
    const request = activationRequest(device, device.rejoinRequest(rejoinType));
    const pending = device.pending!;
    const answers = await race(client, client.rejoinReqMessage(request), copies);
    const successes = answers.filter((a): a is ActivationAnswer => a.ok);
    assert.equal(successes.length, answers.length, `${devEui} rejoin type ${rejoinType}: every copy answered Success, got ${summary(answers)}`);
    // Whichever accept reaches the device, the device takes it (1.1: its JoinNonce is greater than the last).
    let highest: ActivationAnswer | undefined;
    let highestNonce = 0;
    for (const a of successes) {
      const o = processJoinAccept({ macVersion, roots, devEui, joinEui, lastJoinNonce: device.state.lastJoinNonce, pending }, a.phyPayload);
      assert.ok(o.accepted, `${devEui} would accept each rejoin answer: ${o.accepted ? '' : o.detail}`);
      figures.successes++;
      await checkSession(device, a, o.keys, o.joinNonce);
      if (o.joinNonce > highestNonce) [highest, highestNonce] = [a, o.joinNonce];
    }
    const nonces = joinNonces.get(devEui)!.slice(issued).sort((x, y) => x - y);
    assert.deepEqual(nonces, [issued + 1, issued + 2, issued + 3], `${devEui}: three copies, three consecutive JoinNonces`);
    // The device receives the last one issued, so every later accept must beat all three.
    assert.ok(device.receiveJoinAccept(highest!.phyPayload).accepted);
  }

  /** A Join-request from the past, sent to all three again: refused everywhere, and nothing changes. */
  async function replayed(device: SimulatedDevice, phy: Buffer): Promise<void> {
    const client = nsClient();
    const answers = await race(client, client.joinReqMessage(activationRequest(device, phy)), 'identical');
    for (const a of answers) {
      assert.ok(!a.ok && a.kind === 'result' && a.resultCode === 'JoinReqFailed', `${device.identity.devEui}: an old Join-request is refused by every instance, got ${summary([a])}`);
      figures.refusals++;
    }
  }

  async function activateDevice(device: SimulatedDevice): Promise<void> {
    // The first Join-request is kept, to be replayed at the end (its DevNonce then belongs to an older session).
    const first = await onceOnly(device, 'join', 'identical');
    for (let r = 1; r < JOIN_ROUNDS; r++) await onceOnly(device, 'join', r % 2 === 0 ? 'identical' : 'retry');
    if (isLoRaWAN11(device.identity.macVersion)) {
      await onceOnly(device, 'rejoin1', 'retry');
      await everyCopy(device, 0, 'identical');
      await everyCopy(device, 2, 'retry');
      await onceOnly(device, 'join', 'identical');
    }
    await replayed(device, first);
  }

  test(`${DEVICES} devices (1.0.3, 1.0.4, 1.1), each request sent to ${INSTANCES} instances at once / one Success per DevNonce and RJcount1, JoinNonces unique and contiguous, every AppSKey at every instance`, async (t) => {
    const started = performance.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < fleet.length) await activateDevice(fleet[next++]!);
    };
    await Promise.all(Array.from({ length: CONCURRENT_DEVICES }, worker));
    const seconds = (performance.now() - started) / 1000;
    for (const device of fleet) {
      const nonces = joinNonces.get(device.identity.devEui)!;
      assert.deepEqual([...nonces].sort((a, b) => a - b), nonces.map((_, i) => i + 1), `${device.identity.devEui}: JoinNonces 1…${nonces.length}, each once`);
    }
    const perDevice = (v: '1.0' | '1.1') => fleet.filter((d) => isLoRaWAN11(d.identity.macVersion) === (v === '1.1')).map((d) => joinNonces.get(d.identity.devEui)!.length);
    assert.ok(perDevice('1.0').every((n) => n === JOIN_ROUNDS));
    assert.ok(perDevice('1.1').every((n) => n === JOIN_ROUNDS + 8));
    t.diagnostic(`scale-out: ${figures.requests} activation requests (${figures.successes} Success, ${figures.refusals} refused as replays), ${figures.appSKeyReqs} AppSKeyReqs in ${seconds.toFixed(1)} s over ${INSTANCES} instances; Successes per instance ${figures.wins.join('/')}; set-up ${JSON.stringify(figures.setupSeconds)} s`);
  });

  test('PostgreSQL / no (dev_eui, join_nonce) twice in sessions; each counter equals its successes; one audit event per Success', async () => {
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      const twice = await client.query('select dev_eui, join_nonce, count(*)::int as n from sessions group by dev_eui, join_nonce having count(*) > 1');
      assert.deepEqual(twice.rows, [], 'a JoinNonce was stored twice for one device');
      const sessions = await client.query<{ dev_eui: string; nonces: number[] }>('select dev_eui, array_agg(join_nonce order by join_nonce) as nonces from sessions group by dev_eui');
      const counters = await client.query<{ dev_eui: string; last_join_nonce: number }>('select dev_eui, last_join_nonce from devices');
      const stored = new Map(sessions.rows.map((r) => [r.dev_eui, r.nonces]));
      for (const { dev_eui, last_join_nonce } of counters.rows) {
        const issued = joinNonces.get(dev_eui)!;
        assert.equal(last_join_nonce, issued.length, `${dev_eui}: the counter moved once per Success, never for a refusal`);
        // Each device has at most the default sessionLimit (10) sessions here, so none was pruned.
        assert.deepEqual(stored.get(dev_eui), [...issued].sort((a, b) => a - b), `${dev_eui}: one session per JoinNonce issued`);
      }
      const audited = await client.query<{ n: number }>("select count(*)::int as n from audit_events where action in ('join.accept', 'rejoin.accept')");
      assert.equal(audited.rows[0]!.n, figures.successes);
    } finally {
      await client.end();
    }
  });
});

/** The NS's choices around a device's frame: MACVersion 1.1 with OptNeg for 1.1 devices, a fresh DevAddr. */
function activationRequest(device: SimulatedDevice, phyPayload: Buffer) {
  const { devEui, joinEui, macVersion } = device.identity;
  return { phyPayload, devEui, joinEui, macVersion, devAddr: devAddrFromLeBytes(randomBytes(4)), dlSettings: isLoRaWAN11(macVersion) ? 0x80 : 0x00, rxDelay: 1 };
}

function nsKeysOf(keys: SessionKeys): NsSessionKeys {
  return keys.scheme === 'legacy' ? { scheme: 'legacy', nwkSKey: keys.nwkSKey } : { scheme: 'lorawan11', fNwkSIntKey: keys.fNwkSIntKey, sNwkSIntKey: keys.sNwkSIntKey, nwkSEncKey: keys.nwkSEncKey };
}

function summary(answers: readonly (ActivationAnswer | Failure)[]): string {
  return answers.map((a) => (a.ok ? 'Success' : a.kind === 'result' ? `${a.resultCode} (${a.description ?? ''})` : `${a.kind}: ${a.detail}`)).join(', ');
}
