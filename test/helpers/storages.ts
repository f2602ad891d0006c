import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPostgresStorage, openSqliteStorage, type Storage } from '../../src/storage/index.js';
import { createTestDatabase } from './postgres.js';

export interface OpenedStorage {
  readonly storage: Storage;
  /** SQLite: the database file. */
  readonly path?: string;
  /** PostgreSQL: the database's URL. */
  readonly url?: string;
  /** Closes the storage and deletes its database. Safe to call twice. */
  cleanup(): Promise<void>;
}

export interface StorageBackend {
  readonly name: 'sqlite' | 'postgres';
  /** A fresh, migrated, empty storage of its own. */
  open(): Promise<OpenedStorage>;
}

/** Run the same tests against every database: `for (const backend of storageBackends) describe(backend.name, …)`. */
export const storageBackends: readonly StorageBackend[] = [
  {
    name: 'sqlite',
    async open() {
      const dir = await mkdtemp(join(tmpdir(), 'joinkeep-sqlite-'));
      const path = join(dir, 'joinkeep.db');
      const storage = await openSqliteStorage(path);
      await storage.migrate().catch(async (error: unknown) => {
        await storage.close();
        await rm(dir, { recursive: true, force: true });
        throw error;
      });
      return {
        storage,
        path,
        async cleanup() {
          await storage.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'postgres',
    async open() {
      const database = await createTestDatabase();
      const storage = await openPostgresStorage(database.url, { maxConnections: 4 }).catch(async (error: unknown) => {
        await database.drop();
        throw error;
      });
      await storage.migrate().catch(async (error: unknown) => {
        await storage.close();
        await database.drop();
        throw error;
      });
      return {
        storage,
        url: database.url,
        async cleanup() {
          await storage.close();
          await database.drop();
        },
      };
    },
  },
];
