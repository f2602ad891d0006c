import cluster from 'node:cluster';
import BetterSqlite3 from 'better-sqlite3';
import Fastify from 'fastify';
import pg from 'pg';

/*
 * The HTTP floors of bench/join.ts, served with the same process layout as `joinkeep serve --processes N`
 * (node:cluster, N workers sharing one loopback port, round-robin), driven by the same load generator:
 *
 *   empty            — Fastify 5 POST: parse the JSON body, answer a small JSON object. What any JSON-over-HTTP
 *                      server pays.
 *   durable-sqlite   — the same, plus one durable state update per request: a counter row (picked from the body's
 *                      key) incremented in SQLite WAL with synchronous=FULL, requests of one event-loop turn sharing
 *                      one BEGIN IMMEDIATE … COMMIT (group commit, as Joinkeep does), each answered after its COMMIT;
 *                      a write lock held by another worker is waited for off the event loop (busy_timeout 0,
 *                      retried), as Joinkeep does.
 *   durable-postgres — the same update in PostgreSQL: one autocommitted `UPDATE … RETURNING` per request (one round
 *                      trip, a named prepared statement) on a pool of 10 connections per process (Joinkeep's default
 *                      pool) with synchronous_commit=on, answered after its COMMIT. No grouping in the application,
 *                      as Joinkeep's PostgreSQL storage commits every reservation on its own; PostgreSQL itself may
 *                      flush the WAL of concurrent commits together, as it does for Joinkeep.
 *
 * Usage: node dist/bench/floor-server.js <empty|durable-sqlite|durable-postgres> <processes> [sqlite file | postgres url]
 * Prints one JSON line {"port":N} on stdout once every worker listens; SIGTERM stops it and its workers.
 */

export type FloorMode = 'empty' | 'durable-sqlite' | 'durable-postgres';
type Mode = FloorMode;

const ROWS = 4096;

if (cluster.isPrimary) {
  const mode = process.argv[2] as Mode;
  const processes = Number(process.argv[3] ?? 1);
  const dbPath = process.argv[4];
  if (mode !== 'empty' && mode !== 'durable-sqlite' && mode !== 'durable-postgres') throw new Error('mode: empty | durable-sqlite | durable-postgres');
  if (mode === 'durable-sqlite') {
    if (!dbPath) throw new Error('durable-sqlite needs a SQLite file');
    const db = openDb(dbPath);
    db.exec('create table if not exists counters (id integer primary key, n integer not null)');
    const insert = db.prepare('insert or ignore into counters (id, n) values (?, 0)');
    db.transaction(() => { for (let i = 0; i < ROWS; i++) insert.run(i); })();
    db.close();
  }
  if (mode === 'durable-postgres') {
    if (!dbPath) throw new Error('durable-postgres needs a PostgreSQL URL');
    const client = new pg.Client({ connectionString: dbPath });
    await client.connect();
    try {
      await client.query('create table if not exists counters (id integer primary key, n bigint not null)');
      await client.query('insert into counters (id, n) select i, 0 from generate_series(0, $1::int - 1) i on conflict do nothing', [ROWS]);
    } finally {
      await client.end();
    }
  }
  let listening = 0;
  let port = 0;
  cluster.on('listening', (_w, address) => {
    port = address.port;
    if (++listening === processes) process.stdout.write(`${JSON.stringify({ port })}\n`);
  });
  cluster.on('exit', (_w, code, signal) => {
    if (!stopping) {
      process.stderr.write(`floor-server: worker exited (${signal ?? code})\n`);
      process.exit(1);
    }
  });
  let stopping = false;
  const stop = (): void => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The bench went away: do not linger.
  process.stdin.on('end', stop).resume();
  for (let i = 0; i < processes; i++) cluster.fork({ FLOOR_MODE: mode, FLOOR_DB: dbPath ?? '' });
} else {
  await worker(process.env['FLOOR_MODE'] as Mode, process.env['FLOOR_DB'] ?? '');
}

function openDb(path: string): BetterSqlite3.Database {
  const db = new BetterSqlite3(path, { timeout: 5000 });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  return db;
}

async function worker(mode: Mode, dbPath: string): Promise<void> {
  process.on('disconnect', () => process.exit(0));
  const app = Fastify();
  if (mode === 'empty') {
    app.post('/', async (req) => ({ ok: typeof req.body === 'object' }));
  } else if (mode === 'durable-postgres') {
    // synchronous_commit forced on, as openPostgresStorage does: COMMIT returns once its WAL record is flushed.
    const pool = new pg.Pool({ connectionString: dbPath, max: 10, options: '-c synchronous_commit=on' });
    app.post('/', async (req) => {
      const body = req.body as { DevEUI?: string };
      const id = Number.parseInt((body.DevEUI ?? '0').slice(-4), 16) % ROWS;
      const { rows } = await pool.query<{ n: string }>({ name: 'floor-update', text: 'update counters set n = n + 1 where id = $1 returning n', values: [id] });
      return { ok: true, n: Number(rows[0]?.n) };
    });
  } else {
    const db = openDb(dbPath);
    const begin = db.prepare('begin immediate');
    const commit = db.prepare('commit');
    const rollback = db.prepare('rollback');
    const update = db.prepare('update counters set n = n + 1 where id = ? returning n');
    let queue: { id: number; done: (n: number | Error) => void }[] = [];
    db.pragma('busy_timeout = 0');
    let busyRounds = 0;
    const drain = (): void => {
      const group = queue;
      const results: number[] = [];
      try {
        begin.run();
      } catch (error) {
        if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
        // Another worker holds the write lock: try again after the event loop ran; arrivals join this group.
        busyRounds++;
        if (busyRounds === 1) setImmediate(drain);
        else setTimeout(drain, 1);
        return;
      }
      busyRounds = 0;
      queue = [];
      try {
        for (const r of group) results.push((update.get(r.id) as { n: number }).n);
        commit.run();
      } catch (error) {
        if (db.inTransaction) rollback.run();
        for (const r of group) r.done(error as Error);
        return;
      }
      group.forEach((r, i) => r.done(results[i]!));
    };
    app.post('/', async (req) => {
      const body = req.body as { DevEUI?: string };
      const id = Number.parseInt((body.DevEUI ?? '0').slice(-4), 16) % ROWS;
      const n = await new Promise<number>((resolve, reject) => {
        if (queue.length === 0 && busyRounds === 0) setImmediate(drain);
        queue.push({ id, done: (v) => (v instanceof Error ? reject(v) : resolve(v)) });
      });
      return { ok: true, n };
    });
  }
  await app.listen({ host: '127.0.0.1', port: 0 });
}
