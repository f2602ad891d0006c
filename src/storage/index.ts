export * from './storage.js';
export * from './errors.js';
export { openSqliteStorage, SqliteStorage, type SqliteSettings, type SqliteStorageOptions } from './sqlite.js';
export { openPostgresStorage, PostgresStorage, type PostgresSettings, type PostgresStorageOptions } from './postgres.js';

export { openStorage, type StorageConfig } from './open.js';
export { PEER_LOOKUP_TTL_MS } from './kysely-storage.js';
