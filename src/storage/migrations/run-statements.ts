import { sql, type Kysely } from 'kysely';

/**
 * Runs DDL statements one by one (better-sqlite3 prepares exactly one statement at a time).
 * Migrations are written as plain SQL per database so that the DDL each database receives is visible at a glance.
 */
export async function runStatements(db: Kysely<unknown>, statements: readonly string[]): Promise<void> {
  for (const statement of statements) {
    await sql.raw(statement).execute(db);
  }
}
