import type { PostgresStorageOptions } from './postgres.js';
import type { Storage } from './storage.js';

export type StorageConfig =
  | { readonly kind: 'sqlite'; readonly path: string }
  | { readonly kind: 'postgres'; readonly url: string; readonly options?: PostgresStorageOptions };

/**
 * Opens the configured storage, loading only that database's driver (a CLI command on SQLite never loads pg).
 * The caller (the composition root) then runs `migrate()`.
 */
export async function openStorage(config: StorageConfig): Promise<Storage> {
  switch (config.kind) {
    case 'sqlite':
      return (await import('./sqlite.js')).openSqliteStorage(config.path);
    case 'postgres':
      return (await import('./postgres.js')).openPostgresStorage(config.url, config.options);
  }
}
