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
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';
import { joinReq, joinRequestFrame, resultCode } from '../helpers/ts002.js';

/*
 * The nonce guarantee across processes, end to end: two `joinkeep serve` processes on one database receive the
 * same Join-requests at the same moment (NS retries, roaming duplicates). Each DevNonce must be accepted exactly
 * once, and no JoinNonce may ever be sent twice.
 */

const TOKEN = 'race-ns-token-0123456789abcdef0123';
const JOIN_EUI = '70B3D57ED0000777';
const ROUNDS = 25;

async function post(url: string, body: unknown): Promise<Record<string, any>> {
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) });
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, any>;
}

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`${backend} / two serve processes, one database`, () => {
    let dir: string;
    let drop: (() => Promise<void>) | undefined;
    const servers: RunningServer[] = [];
    const urls: string[] = [];
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
      for (let i = 0; i < 2; i++) {
        const s = await startServer(dataDir);
        servers.push(s);
        urls.push(s.url);
      }
    });
    after(async () => {
      await Promise.all(servers.map((s) => s.stop()));
      await drop?.();
      await rm(dir, { recursive: true, force: true });
    });

    test(`${ROUNDS} Join-requests, each sent to both processes at once / one Success per DevNonce, JoinNonces unique and contiguous`, async () => {
      const answers = await Promise.all(
        Array.from({ length: ROUNDS }, (_, i) => {
          const req = joinReq({ phy: joinRequestFrame(appKey, devEui, JOIN_EUI, 1000 + i), devEui, joinEui: JOIN_EUI });
          return Promise.all(urls.map((url) => post(url, req)));
        }),
      );
      const joinNonces: number[] = [];
      for (const pair of answers) {
        const codes = pair.map(resultCode).sort();
        assert.deepEqual(codes, ['JoinReqFailed', 'Success'], 'exactly one of the two processes accepts each DevNonce');
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
  });
}
