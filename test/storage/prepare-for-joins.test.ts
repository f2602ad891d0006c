import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type SqliteStorage, openSqliteStorage } from '../../src/storage/index.js';
import { JOIN_EUI, acceptDevNonce, makeDevice } from '../helpers/storage-fixtures.js';

/*
 * Storage.prepareForJoins on SQLite: the writer thread and its checkpointer start then, not on the first reservation,
 * so the first Join-request after `serve` starts does not wait for them. Observed from outside: this process's
 * threads (Linux /proc). The control is the same storage without the call, whose first reservation starts them.
 */

const threads = (): number => readdirSync('/proc/self/task').length;

async function withStorage(body: (storage: SqliteStorage, reserveOnce: () => Promise<void>) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'joinkeep-prepare-'));
  const storage = await openSqliteStorage(join(dir, 'joinkeep.db'));
  try {
    await storage.migrate();
    const device = makeDevice();
    await storage.insertDevice(device);
    const reserveOnce = async (): Promise<void> => {
      const reserved = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), { sessionLimit: 10 });
      assert.ok('committed' in reserved);
    };
    await body(storage, reserveOnce);
  } finally {
    await storage.close();
    await rm(dir, { recursive: true, force: true });
  }
}

describe('storage / SQLite prepareForJoins', () => {
  it('starts the writer and checkpointer threads, so the first reservation starts none', async () => {
    await withStorage(async (storage, reserveOnce) => {
      const before = threads();
      await storage.prepareForJoins();
      const prepared = threads();
      assert.ok(prepared >= before + 2, `threads ${before} → ${prepared}`);
      await reserveOnce();
      assert.equal(threads(), prepared);
      // Called again, it starts nothing more.
      await storage.prepareForJoins();
      assert.equal(threads(), prepared);
    });
  });

  it('without it, the first reservation starts them (the control)', async () => {
    await withStorage(async (_storage, reserveOnce) => {
      const before = threads();
      await reserveOnce();
      assert.ok(threads() >= before + 2, `threads ${before} → ${threads()}`);
    });
  });
});
