import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { storageBackends, type OpenedStorage } from '../helpers/storages.js';
import { JOIN_EUI, makeDevice } from '../helpers/storage-fixtures.js';
import type { RaceConfig, RaceMessage } from '../helpers/storage-race-worker.js';

/*
 * The nonce guarantee across processes (DESIGN: "JoinNonce … is committed before the answer leaves"; STYLE rule 5):
 * several processes, each with its own connection to the same database, race reserveJoin on one device with the
 * same DevNonces. Exactly one of them may accept each DevNonce, and every accepted join must get its own JoinNonce,
 * counting up from 1 without gaps.
 */

const WORKERS = 4;
const DEV_NONCES = 40;
const workerScript = fileURLToPath(new URL('../helpers/storage-race-worker.js', import.meta.url));

async function race(opened: OpenedStorage): Promise<Array<Extract<RaceMessage, { type: 'done' }>>> {
  const device = makeDevice();
  await opened.storage.insertDevice(device);
  const storage = opened.path !== undefined ? { kind: 'sqlite' as const, path: opened.path } : { kind: 'postgres' as const, url: opened.url as string };

  const children: ChildProcess[] = [];
  try {
    const outcomes = Array.from({ length: WORKERS }, (_, worker) => {
      const config: RaceConfig = { storage, worker, devEui: device.devEui, joinEui: JOIN_EUI, devNonces: DEV_NONCES, sessionLimit: DEV_NONCES * 2 };
      const child = fork(workerScript, { env: { ...process.env, JOINKEEP_RACE: JSON.stringify(config) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      children.push(child);
      let ready!: () => void;
      const isReady = new Promise<void>((resolve) => (ready = resolve));
      const done = new Promise<Extract<RaceMessage, { type: 'done' }>>((resolve, reject) => {
        child.on('message', (message: RaceMessage) => {
          if (message.type === 'ready') ready();
          else if (message.type === 'done') resolve(message);
          else reject(new Error(`worker ${worker}: ${message.message}`));
        });
        child.on('exit', (code) => reject(new Error(`worker ${worker} exited with ${code} before reporting`)));
      });
      return { child, isReady, done };
    });
    // Start together, so that the processes really contend for the device.
    await Promise.all(outcomes.map((o) => o.isReady));
    for (const o of outcomes) o.child.send('go');
    const results = await Promise.all(outcomes.map((o) => o.done));

    const accepted = results.flatMap((r) => r.accepted);
    const devNonces = accepted.map((a) => a.devNonce).sort((a, b) => a - b);
    assert.deepEqual(devNonces, Array.from({ length: DEV_NONCES }, (_, i) => i), 'each DevNonce accepted exactly once');
    const joinNonces = accepted.map((a) => a.joinNonce).sort((a, b) => a - b);
    assert.deepEqual(joinNonces, Array.from({ length: DEV_NONCES }, (_, i) => i + 1), 'JoinNonces unique and contiguous from 1');
    assert.equal(results.reduce((n, r) => n + r.refused, 0), DEV_NONCES * (WORKERS - 1), 'every other attempt refused');

    const state = await opened.storage.getJoinState(device.devEui, JOIN_EUI);
    assert.equal(state.lastJoinNonce, DEV_NONCES);
    assert.deepEqual([...state.usedDevNonces].sort((a, b) => a - b), devNonces);
    const sessions = await opened.storage.listSessions(device.devEui);
    assert.deepEqual(sessions.map((s) => s.joinNonce), [...joinNonces].reverse(), 'one session per accepted join, in JoinNonce order');
    return results;
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill();
  }
}

for (const backend of storageBackends) {
  describe(`${backend.name} / reserveJoin across ${WORKERS} processes`, () => {
    it('same DevNonces raced / each accepted once, JoinNonces unique and contiguous', { timeout: 60_000 }, async () => {
      const opened = await backend.open();
      try {
        await race(opened);
      } finally {
        await opened.cleanup();
      }
    });
  });
}
