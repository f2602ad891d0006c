import { Migrator, sql, type Kysely, type Migration } from 'kysely';
import { StorageError } from './errors.js';

/** Kysely's default bookkeeping tables, named here so the schema check and the Migrator agree. */
const MIGRATION_TABLE = 'kysely_migration';
const MIGRATION_LOCK_TABLE = 'kysely_migration_lock';

/**
 * Applies the pending migrations of `migrations` (a static registry, see migrations/<db>/index.ts).
 * Refuses (SCHEMA_TOO_NEW) when the database has applied a migration this build does not know: an older
 * build must not write to a schema whose meaning it does not know, e.g. after a rollback of the software.
 */
export async function applyMigrations(db: Kysely<unknown>, migrations: Readonly<Record<string, Migration>>): Promise<void> {
  await refuseUnknownMigrations(db, migrations);
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => ({ ...migrations }) },
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error === undefined) return;
  const failed = results?.find((r) => r.status === 'Error')?.migrationName;
  // Backstop for a newer build migrating between our check and the Migrator's own (Kysely reports it so).
  if (error instanceof Error && error.message.includes('previously executed migration')) {
    throw new StorageError('SCHEMA_TOO_NEW', `database schema is newer than this build: ${error.message}`, { cause: error });
  }
  throw new StorageError(
    'UNAVAILABLE',
    failed === undefined ? 'database migration failed' : `database migration ${failed} failed`,
    { cause: error },
  );
}

async function refuseUnknownMigrations(db: Kysely<unknown>, migrations: Readonly<Record<string, Migration>>): Promise<void> {
  const tables = await db.introspection.getTables();
  if (!tables.some((t) => t.name === MIGRATION_TABLE)) return;
  const applied = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)}`.execute(db);
  const unknown = applied.rows.map((r) => r.name).filter((name) => !Object.hasOwn(migrations, name)).sort();
  if (unknown.length > 0) {
    throw new StorageError(
      'SCHEMA_TOO_NEW',
      `database schema is newer than this build: it has migration(s) ${unknown.join(', ')} this build does not know; upgrade Joinkeep`,
    );
  }
}
