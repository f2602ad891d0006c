import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { initDataDir } from '../../src/app/init.js';
import { openJoinkeep } from '../../src/app/joinkeep.js';
import { addNetworkServer } from '../../src/commissioning/peers.js';
import { aes128EcbEncrypt, aesKeyWrap } from '../../src/custody/primitives.js';
import { addDevice } from '../../src/provisioning/devices.js';
import { addKek } from '../../src/provisioning/keks.js';
import type { Eui64 } from '../../src/protocol/index.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { type RunningServer, childPids, startServer } from '../../sim/joinkeep-server.js';
import { joinReq, joinRequestFrame, resultCode } from '../helpers/ts002.js';

/*
 * The nonce guarantee across processes, end to end: two `joinkeep serve` processes on one database — or the two
 * workers of one `joinkeep serve --processes 2` — receive the same Join-requests at the same moment (NS retries,
 * roaming duplicates). Each DevNonce must be accepted exactly once, and no JoinNonce may ever be sent twice.
 */

const TOKEN = 'race-ns-token-0123456789abcdef0123';
const JOIN_EUI = '70B3D57ED0000777';
const ROUNDS = 25;

async function post(url: string, body: unknown): Promise<Record<string, any>> {
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) });
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, any>;
}

/** Layouts of several processes on one database: separate `serve` processes, or one `serve --processes 2`. */
const layouts = [
  { name: 'two serve processes, one database', servers: 2, args: [] as string[] },
  { name: 'serve --processes 2 (workers share the port), one database', servers: 1, args: ['--processes', '2'] },
] as const;

for (const backend of ['sqlite', 'postgres'] as const) {
  for (const layout of layouts) {
    describe(`${backend} / ${layout.name}`, () => {
      let dir: string;
      let drop: (() => Promise<void>) | undefined;
      const servers: RunningServer[] = [];
      let urls: string[] = [];
      const appKey = Buffer.from('00112233445566778899AABBCCDDEEFF', 'hex');
      const devEui = '0011223344556677';

      before(async () => {
        dir = await mkdtemp(join(tmpdir(), `joinkeep-race-${backend}-`));
        const dataDir = join(dir, 'jk');
        if (backend === 'postgres') {
          const db = await createTestDatabase();
          drop = db.drop;
          await initDataDir(dataDir, { storage: { kind: 'postgres', url: db.url } });
        } else {
          await initDataDir(dataDir);
        }
        const jk = await openJoinkeep(dataDir, { logger: pino({ level: 'silent' }) });
        try {
          const deps = { storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'test' };
          const importKek = Buffer.alloc(16, 7);
          await addKek(deps, 'import', Buffer.from(importKek));
          await addKek(deps, 'ns', Buffer.alloc(16, 9));
          await addNetworkServer(deps, { netId: '000013', token: TOKEN, kekLabel: 'ns' });
          await addDevice(deps, {
            devEui,
            joinEui: JOIN_EUI,
            macVersion: '1.0.3',
            homeNetId: '000013',
            appKey: JSON.stringify({ KEKLabel: 'import', AESKey: aesKeyWrap(importKek, appKey).toString('hex') }),
          });
        } finally {
          await jk.close();
        }
        for (let i = 0; i < layout.servers; i++) servers.push(await startServer(dataDir, { args: layout.args }));
        // Each request of a pair goes to its own connection: with --processes, the primary deals connections to
        // the workers in turn, so the two copies usually meet in two different processes.
        urls = servers.length === 2 ? servers.map((s) => s.url) : [servers[0]!.url, servers[0]!.url];
      });
      after(async () => {
        await Promise.all(servers.map((s) => s.stop()));
        await drop?.();
        await rm(dir, { recursive: true, force: true });
      });

      if (layout.servers === 1) {
        test('the primary runs two worker processes', async () => {
          // The port answers as soon as the first worker listens; the second is forked right after.
          await waitUntil(() => childPids(servers[0]!.pid).length === 2);
        });
      }

      test(`${ROUNDS} Join-requests, each sent twice at once / one Success per DevNonce, JoinNonces unique and contiguous`, async () => {
        const answers = await Promise.all(
          Array.from({ length: ROUNDS }, (_, i) => {
            const req = joinReq({ phy: joinRequestFrame(appKey, devEui, JOIN_EUI, 1000 + i), devEui, joinEui: JOIN_EUI });
            return Promise.all(urls.map((url) => post(url, req)));
          }),
        );
        const joinNonces: number[] = [];
        for (const pair of answers) {
          const codes = pair.map(resultCode).sort();
          assert.deepEqual(codes, ['JoinReqFailed', 'Success'], 'exactly one of the two copies is accepted');
          const accept = pair.find((a) => resultCode(a) === 'Success')!;
          // Decrypt as the device does (AES encrypt undoes the Join Server's AES decrypt) and read JoinNonce.
          const plain = aes128EcbEncrypt(appKey, Buffer.from(accept.PHYPayload, 'hex').subarray(1));
          joinNonces.push(plain.readUIntLE(0, 3));
        }
        assert.deepEqual([...joinNonces].sort((a, b) => a - b), Array.from({ length: ROUNDS }, (_, i) => i + 1), 'every JoinNonce used once, none skipped');
        const jk = await openJoinkeep(join(dir, 'jk'), { logger: pino({ level: 'silent' }) });
        try {
          assert.equal((await jk.storage.getJoinState(devEui as Eui64, JOIN_EUI as Eui64)).lastJoinNonce, ROUNDS);
        } finally {
          await jk.close();
        }
      });

      if (layout.servers === 1) {
        test('/metrics / counts the requests of every worker', async () => {
          const text = await (await fetch(new URL('/metrics', urls[0]))).text();
          const count = (result: string): number =>
            Number(new RegExp(`^joinkeep_backend_requests_total\\{message_type="JoinReq",result="${result}",mac_version="1.0.3"\\} (\\d+)$`, 'm').exec(text)?.[1]);
          assert.equal(count('Success'), ROUNDS, text);
          assert.equal(count('JoinReqFailed'), ROUNDS);
        });

        test('stop / the workers exit with the primary', async () => {
          const workers = childPids(servers[0]!.pid);
          assert.equal(workers.length, 2);
          await servers[0]!.stop();
          await waitUntil(() => workers.every((pid) => !alive(pid)));
        });
      }
    });
  }
}

describe('serve --processes 2 / the primary is killed (SIGKILL)', () => {
  test('its workers notice and exit: no orphans', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'joinkeep-orphans-'));
    try {
      await initDataDir(join(dir, 'jk'));
      const server = await startServer(join(dir, 'jk'), { args: ['--processes', '2'] });
      await waitUntil(() => childPids(server.pid).length === 2);
      const workers = childPids(server.pid);
      process.kill(server.pid, 'SIGKILL');
      await waitUntil(() => workers.every((pid) => !alive(pid)));
      await server.stop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Polls until `done` holds; fails after a generous bound (this asserts an outcome, not a duration). */
async function waitUntil(done: () => boolean, boundMs = 20_000): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`condition not reached within ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
