import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { withStatementCache } from '../../src/storage/sqlite-statement-cache.js';

/*
 * The main SQLite connection as Kysely sees it (src/storage/sqlite-statement-cache.ts): statements kept by their SQL
 * text, and rows made from arrays. Whatever it saves, it must hand back exactly what better-sqlite3 itself would.
 */

describe('storage / SQLite statement cache', () => {
  let dir: string;
  let connection: BetterSqlite3.Database;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'joinkeep-statements-'));
    connection = new BetterSqlite3(join(dir, 'db.sqlite'));
    connection.exec(`
      create table t (id integer primary key, name text, blob blob, score real, note text);
      insert into t values (1, 'one', x'0102', 1.5, null), (2, 'two', x'', -3.25, 'n'), (3, null, null, null, 'x');
    `);
  });
  after(() => {
    connection.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const queries = [
    'select * from t order by id',
    // Two columns named alike: the later one wins, in better-sqlite3 as here.
    'select id, name, note as name, score from t order by id desc',
    'select count(*) as n, max(score) from t',
    'select * from t where id = ?',
  ];

  it('returns the rows better-sqlite3 returns: same values, same names in the same order', () => {
    const cached = withStatementCache(connection);
    for (const q of queries) {
      const parameters = q.includes('?') ? [2] : [];
      const expected = connection.prepare(q).all(...parameters) as Record<string, unknown>[];
      const got = cached.prepare(q).all(parameters) as Record<string, unknown>[];
      assert.deepEqual(got, expected, q);
      got.forEach((row, i) => assert.deepEqual(Object.keys(row), Object.keys(expected[i]!), q));
    }
  });

  it('iterates the same rows as all()', () => {
    const cached = withStatementCache(connection);
    const statement = cached.prepare('select * from t order by id');
    assert.deepEqual([...statement.iterate([])], statement.all([]));
  });

  it('keeps a statement by its text, and forgets the oldest beyond its limit', () => {
    const cached = withStatementCache(connection, 2);
    const a = cached.prepare('select 1 as a');
    assert.equal(cached.prepare('select 1 as a'), a);
    cached.prepare('select 2 as b');
    cached.prepare('select 3 as c');
    assert.notEqual(cached.prepare('select 1 as a'), a, 'the oldest was forgotten');
  });

  it('runs writes, and reports their changes', () => {
    const cached = withStatementCache(connection);
    const result = cached.prepare('update t set note = ? where id = ?').run(['m', 3]);
    assert.equal(result.changes, 1);
    assert.equal((connection.prepare('select note from t where id = 3').get() as { note: string }).note, 'm');
  });

  it('after a schema change, a kept `select *` returns the new columns', () => {
    const cached = withStatementCache(connection);
    const q = 'select * from t where id = 1';
    assert.deepEqual(Object.keys(cached.prepare(q).all([])[0] as object), ['id', 'name', 'blob', 'score', 'note']);
    cached.prepare('alter table t add column extra text').run([]);
    assert.deepEqual(Object.keys(cached.prepare(q).all([])[0] as object), ['id', 'name', 'blob', 'score', 'note', 'extra']);
  });
});
