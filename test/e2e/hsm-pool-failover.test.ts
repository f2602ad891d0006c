import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { initDataDir } from '../../src/app/init.js';
import { openJoinkeep } from '../../src/app/joinkeep.js';
import { addNetworkServer } from '../../src/commissioning/peers.js';
import { aes128EcbEncrypt, aesKeyWrap } from '../../src/custody/primitives.js';
import type { Eui64 } from '../../src/protocol/index.js';
import { addDevice } from '../../src/provisioning/devices.js';
import { addKek } from '../../src/provisioning/keks.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { createTestToken, disableToken, privateModuleCopy } from '../helpers/softhsm.js';
import { joinReq, joinRequestFrame, resultCode } from '../helpers/ts002.js';

/*
 * Issue 4's high-availability test, end to end: `joinkeep serve` (its own process) on a pool of two SoftHSM2 tokens
 * answers Join-requests from eight concurrent network-server connections; token b's storage is taken away in the
 * middle of the load. Every Join-request — including those in flight at the failure — must be answered with
 * Success, no JoinNonce may be used twice, and /metrics and /healthz must show b out of service and its failed
 * operations. When b comes back, the health check readmits it and it serves joins again.
 *
 * Each token is reached through its own copy of the SoftHSM2 library, as two HSMs have their own client libraries:
 * SoftHSM2 keeps a token that failed marked invalid until its library is initialised again, which readmission does.
 */

const TOKEN = 'pool-ns-token-0123456789abcdef01234';
const JOIN_EUI = '70B3D57ED0000888';
const DEVICES = 16;
const CONNECTIONS = 8;

interface Device {
  readonly devEui: string;
  readonly appKey: Buffer;
  nextDevNonce: number;
  readonly joinNonces: number[];
}

async function post(url: string, body: unknown): Promise<Record<string, any>> {
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) });
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, any>;
}

/** Prometheus text → value of one series, e.g. sample(text, 'joinkeep_hsm_member_up', { member: 'b' }). */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.indexOf('}'));
    if (want.every((w) => inside.split(',').includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('HSM pool of two SoftHSM2 tokens under join load', () => {
  let dir: string;
  let server: RunningServer;
  let a: ReturnType<typeof createTestToken>;
  let b: ReturnType<typeof createTestToken>;
  const devices: Device[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'joinkeep-hsm-pool-'));
    a = createTestToken('jk-a');
    b = createTestToken('jk-b');
    const pinA = join(dir, 'a.pin');
    const pinB = join(dir, 'b.pin');
    await writeFile(pinA, `${a.pin}\n`, { mode: 0o600 });
    await writeFile(pinB, `${b.pin}\n`, { mode: 0o600 });
    const dataDir = join(dir, 'jk');
    await initDataDir(dataDir, {
      pkcs11: {
        kind: 'pkcs11',
        module: privateModuleCopy('a'),
        tokens: [
          { label: a.label, pinFile: pinA },
          { label: b.label, pinFile: pinB, module: privateModuleCopy('b') },
        ],
        healthIntervalMs: 200,
      },
    });
    const jk = await openJoinkeep(dataDir, { logger: pino({ level: 'silent' }) });
    try {
      const deps = { storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'test' };
      const importKek = randomBytes(16);
      await addKek(deps, 'import', Buffer.from(importKek));
      await addKek(deps, 'ns', randomBytes(16));
      await addNetworkServer(deps, { netId: '000013', token: TOKEN, kekLabel: 'ns' });
      for (let i = 0; i < DEVICES; i++) {
        const device = { devEui: `00AA00000000${i.toString(16).padStart(4, '0')}`.toUpperCase(), appKey: randomBytes(16), nextDevNonce: 1, joinNonces: [] };
        await addDevice(deps, {
          devEui: device.devEui,
          joinEui: JOIN_EUI,
          macVersion: '1.0.3',
          homeNetId: '000013',
          appKey: JSON.stringify({ KEKLabel: 'import', AESKey: aesKeyWrap(importKek, device.appKey).toString('hex') }),
        });
        devices.push(device);
      }
    } finally {
      await jk.close();
    }
    server = await startServer(dataDir);
  });

  after(async () => {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** `count` joins over CONNECTIONS concurrent connections, each connection with its own devices; every answer checked. */
  async function joins(count: number, onProgress?: (answered: number) => void): Promise<string[]> {
    const failures: string[] = [];
    let sent = 0;
    let answered = 0;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async (_, c) => {
        const mine = devices.filter((_, i) => i % CONNECTIONS === c);
        for (let k = 0; sent < count; k++) {
          sent++;
          const device = mine[k % mine.length]!;
          const devNonce = device.nextDevNonce++;
          const answer = await post(server.url, joinReq({ phy: joinRequestFrame(device.appKey, device.devEui, JOIN_EUI, devNonce), devEui: device.devEui, joinEui: JOIN_EUI }));
          answered++;
          onProgress?.(answered);
          if (resultCode(answer) !== 'Success') {
            failures.push(`${device.devEui} DevNonce ${devNonce}: ${resultCode(answer)} ${answer['Result']?.['Description'] ?? ''}`);
            continue;
          }
          // As the device reads it: AES encrypt undoes the Join Server's AES decrypt; JoinNonce is the first 3 bytes.
          device.joinNonces.push(aes128EcbEncrypt(device.appKey, Buffer.from(answer['PHYPayload'], 'hex').subarray(1)).readUIntLE(0, 3));
        }
      }),
    );
    return failures;
  }

  async function metrics(): Promise<string> {
    return (await fetch(new URL('/metrics', server.url))).text();
  }

  test('a token fails mid-load: no join lost, no JoinNonce reused, metrics show it; the token is readmitted when it returns', async () => {
    let restore: (() => void) | undefined;
    try {
      // 150 joins on the whole pool, then token b disappears while 450 more are being answered.
      const failures = await joins(600, (answered) => {
        if (answered === 150) restore = disableToken(b.label);
      });
      assert.ok(restore, 'token b was disabled during the load');
      assert.deepEqual(failures, [], 'every Join-request was answered with Success');

      const afterFailure = await metrics();
      assert.equal(sample(afterFailure, 'joinkeep_hsm_member_up', { member: a.label }), 1);
      assert.equal(sample(afterFailure, 'joinkeep_hsm_member_up', { member: b.label }), 0, 'b is out of service');
      assert.ok((sample(afterFailure, 'joinkeep_hsm_member_failures_total', { member: b.label }) ?? 0) >= 1, 'b failed operations that were run again on a');
      assert.ok((sample(afterFailure, 'joinkeep_hsm_member_operations_total', { member: a.label }) ?? 0) > 0);
      const health = await fetch(new URL('/healthz', server.url));
      assert.equal(health.status, 200);
      const body = (await health.json()) as { status: string; custody: { member: string; state: string }[] };
      assert.equal(body.status, 'degraded');
      assert.notEqual(body.custody.find((m) => m.member === b.label)?.state, 'up');

      restore!();
      restore = undefined;
      const deadline = Date.now() + 20_000;
      let readmitted = '';
      while (Date.now() < deadline) {
        readmitted = await metrics();
        if (sample(readmitted, 'joinkeep_hsm_member_up', { member: b.label }) === 1) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(sample(readmitted, 'joinkeep_hsm_member_up', { member: b.label }), 1, 'b is back in service');
      assert.equal(sample(readmitted, 'joinkeep_hsm_member_readmissions_total', { member: b.label }), 1);
      const servedByB = sample(readmitted, 'joinkeep_hsm_member_operations_total', { member: b.label }) ?? 0;

      assert.deepEqual(await joins(200), [], 'joins after readmission');
      const later = await metrics();
      assert.ok((sample(later, 'joinkeep_hsm_member_operations_total', { member: b.label }) ?? 0) > servedByB, 'b serves again');
      assert.equal(((await (await fetch(new URL('/healthz', server.url))).json()) as { status: string }).status, 'ok');

      // No JoinNonce used twice: each device saw 1, 2, 3, … with nothing repeated or skipped.
      for (const d of devices) assert.deepEqual(d.joinNonces, Array.from({ length: d.joinNonces.length }, (_, i) => i + 1), `JoinNonces of ${d.devEui}`);
      const jk = await openJoinkeep(join(dir, 'jk'), { logger: pino({ level: 'silent' }) });
      try {
        for (const d of devices) assert.equal((await jk.storage.getJoinState(d.devEui as Eui64, JOIN_EUI as Eui64)).lastJoinNonce, d.joinNonces.length);
      } finally {
        await jk.close();
      }
    } finally {
      restore?.();
    }
  });
});
