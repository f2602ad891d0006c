import { openPostgresStorage, type PostgresStorageOptions } from './postgres.js';
import { openSqliteStorage } from './sqlite.js';
import type { Storage } from './storage.js';

export * from './storage.js';
export * from './errors.js';
export { openSqliteStorage, SqliteStorage, type SqliteSettings } from './sqlite.js';
export { openPostgresStorage, PostgresStorage, type PostgresSettings, type PostgresStorageOptions } from './postgres.js';

export type StorageConfig =
  | { readonly kind: 'sqlite'; readonly path: string }
  | { readonly kind: 'postgres'; readonly url: string; readonly options?: PostgresStorageOptions };

/** Opens the configured storage. The caller (the composition root) then runs `migrate()`. */
export async function openStorage(config: StorageConfig): Promise<Storage> {
  switch (config.kind) {
    case 'sqlite':
      return openSqliteStorage(config.path);
    case 'postgres':
      return openPostgresStorage(config.url, config.options);
  }
}
