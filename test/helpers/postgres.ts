import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * A fresh, uniquely named database on the throwaway cluster that `npm test` (scripts/test.sh) starts.
 * Tests never skip PostgreSQL: without the cluster this throws and tells the developer how to get one.
 */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const adminUrl = process.env['JOINKEEP_TEST_PG_URL'];
  if (adminUrl === undefined || adminUrl === '') {
    throw new Error(
      'JOINKEEP_TEST_PG_URL is not set: run the tests with `npm test` (scripts/test.sh starts a throwaway PostgreSQL), ' +
        'or point JOINKEEP_TEST_PG_URL at a cluster where you may create databases',
    );
  }
  const name = `joinkeep_test_${process.pid}_${randomBytes(6).toString('hex')}`;
  await withAdmin(adminUrl, (client) => client.query(`create database ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    url: url.toString(),
    async drop() {
      if (dropped) return;
      dropped = true;
      // FORCE (PostgreSQL 13+) ends connections a failed test may have left open.
      await withAdmin(adminUrl, (client) => client.query(`drop database if exists ${name} with (force)`));
    },
  };
}

async function withAdmin<T>(url: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}
