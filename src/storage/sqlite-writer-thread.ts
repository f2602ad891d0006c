import type BetterSqlite3 from 'better-sqlite3';
import { Worker, parentPort, workerData } from 'node:worker_threads';
import { openSqliteConnection } from './sqlite-connection.js';
import {
  type AuditRow,
  type CheckpointerInit,
  type CheckpointerReport,
  type GroupItem,
  type ItemResult,
  type JoinRow,
  type ReservationWrite,
  type WriterInit,
  type WriterReply,
  type WriterRequest,
  type WriterSettings,
  toWireError,
} from './sqlite-writer-protocol.js';

/*
 * The SQLite writer thread: owns the connection that writes the join path's state (docs/storage.md, "Group commit").
 * With synchronous=FULL a COMMIT returns after the WAL is fsynced, and better-sqlite3 runs it on the calling thread:
 * on the event loop that made every group's fsync (and, now and then, a checkpoint) stall all HTTP work. Here it
 * stalls only this thread. Requests are handled one at a time, in arrival order, so a read sent after a commit sees it.
 *
 * busy_timeout is 0: when another connection holds the write lock, BEGIN IMMEDIATE fails at once with SQLITE_BUSY and
 * the main thread puts the group back and tries again later (sqlite-group-commit.ts), without blocking anything.
 */

const port = parentPort;
if (port === null) throw new Error('sqlite-writer-thread runs as a worker thread');
const init = workerData as WriterInit;
const connection = openSqliteConnection(init.path, 0);
let statements: Statements | undefined;
const checkpoints = startCheckpointer();

port.on('message', (request: WriterRequest) => {
  let reply: WriterReply;
  try {
    // Prepared on first use: the tables exist only after the main connection ran the migrations.
    const s = (statements ??= prepareStatements(connection));
    if (request.op === 'read') reply = { id: request.id, rows: request.keys.map(([joinEui, devEui]) => s.read.get(joinEui, devEui) as JoinRow | undefined) };
    else if (request.op === 'commit') reply = { id: request.id, results: commitGroup(s, request.items) };
    else reply = { id: request.id, settings: settings() };
  } catch (error) {
    reply = { id: request.id, error: toWireError(error) };
  }
  port.postMessage(reply);
});

function settings(): WriterSettings {
  const pragma = (name: string): unknown => connection.pragma(name, { simple: true });
  return {
    journalMode: String(pragma('journal_mode')),
    synchronous: Number(pragma('synchronous')),
    foreignKeys: Number(pragma('foreign_keys')) === 1,
    walAutocheckpoint: Number(pragma('wal_autocheckpoint')),
    checkpointError: checkpoints.lastError,
  };
}

/**
 * The checkpointer thread (sqlite-checkpoint-thread.ts) takes over the checkpoints this connection would run inside
 * its COMMITs. Should it ever end, this connection checkpoints again as SQLite does by default, so the WAL never
 * grows unchecked.
 */
function startCheckpointer(): { readonly commits: Int32Array; lastError: string | undefined } {
  const state = { commits: new Int32Array(new SharedArrayBuffer(4)), lastError: undefined as string | undefined };
  const checkpointerInit: CheckpointerInit = { path: init.path, ...init.checkpoints, commits: state.commits.buffer as SharedArrayBuffer, checkpointStats: init.checkpointStats };
  const checkpointer = new Worker(new URL('./sqlite-checkpoint-thread.js', import.meta.url), { workerData: checkpointerInit });
  checkpointer.unref();
  checkpointer.on('message', (report: CheckpointerReport) => (state.lastError = report.message));
  checkpointer.on('error', (error) => (state.lastError = error instanceof Error ? error.message : String(error)));
  checkpointer.once('exit', () => connection.pragma(`wal_autocheckpoint = ${SQLITE_DEFAULT_AUTOCHECKPOINT}`));
  connection.pragma('wal_autocheckpoint = 0');
  return state;
}

const SQLITE_DEFAULT_AUTOCHECKPOINT = 1000;

/**
 * One transaction for the group. Written first without savepoints (a savepoint per reservation cost about as much as
 * the reservation's own three writes); if one write fails, the transaction is rolled back and the group written
 * again with each item in its own savepoint, so a failed or outdated item writes nothing and the others are
 * unaffected. Throws (after rolling back) if BEGIN or COMMIT fails: then nothing of the group was written.
 */
function commitGroup(s: Statements, items: readonly GroupItem[]): ItemResult[] {
  beginImmediate(s);
  try {
    let results: ItemResult[];
    try {
      results = items.map((item) => (item.kind === 'audit' ? (s.insertAudit.run(item.row), 'written') : write(s, item)));
    } catch (error) {
      if (isBusy(error)) throw error;
      s.rollback.run();
      beginImmediate(s);
      results = items.map((item) => (item.kind === 'audit' ? appendAudit(s, item.row) : reserve(s, item)));
    }
    // synchronous=FULL: COMMIT returns after the WAL is fsynced; only then does the main thread answer.
    s.commit.run();
    Atomics.add(checkpoints.commits, 0, 1);
    return results;
  } catch (error) {
    if (connection.inTransaction) s.rollback.run();
    throw error;
  }
}

/*
 * Another process's group holds the write lock for about a millisecond. Waiting here, off the event loop, for up to
 * LOCK_WAIT_MS (sleeping 50 µs, doubling to 400 µs) takes the lock as soon as it is free; only then is SQLITE_BUSY
 * reported and the group put back by the main thread, which would otherwise read and decide it again on every try.
 * Requests queued for this thread meanwhile wait: they are the next groups, which could not commit either.
 */
const LOCK_WAIT_MS = 2;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function beginImmediate(s: Statements): void {
  const deadline = performance.now() + LOCK_WAIT_MS;
  for (let pauseMs = 0.05; ; pauseMs = Math.min(pauseMs * 2, 0.4)) {
    try {
      s.begin.run();
      return;
    } catch (error) {
      if (!isBusy(error) || performance.now() >= deadline) throw error;
      Atomics.wait(sleeper, 0, 0, pauseMs);
    }
  }
}

function appendAudit(s: Statements, row: AuditRow): ItemResult {
  try {
    s.insertAudit.run(row);
    return 'written';
  } catch (error) {
    if (isBusy(error)) throw error;
    return { error: toWireError(error) };
  }
}

/** One reservation in its own savepoint: a failed write rolls back only this reservation. */
function reserve(s: Statements, w: ReservationWrite): ItemResult {
  s.savepoint.run();
  try {
    const result = write(s, w);
    s.release.run();
    return result;
  } catch (error) {
    s.rollbackToSavepoint.run();
    s.release.run();
    if (isBusy(error)) throw error;
    return { error: toWireError(error) };
  }
}

/** Writes a reservation unless its row changed since it was decided on; throws if a write fails. */
function write(s: Statements, w: ReservationWrite): ItemResult {
  // The decision was made on a row read before this transaction; another connection may have written since.
  const current = s.read.get(w.joinEui, w.devEui) as JoinRow | undefined;
  if (current === undefined || !sameRow(current, w.expect)) return 'conflict';
  s.updateJoinNonce.run(w.joinNonce, w.devEui);
  s.upsertState.run(w.state);
  s.insertSession.run(w.session);
  s.pruneSessions.run(w.devEui, w.devEui, w.sessionLimit - 1);
  if (w.audit !== undefined) s.insertAudit.run(w.audit);
  return 'written';
}

const sameRow = (a: JoinRow, b: JoinRow): boolean =>
  a.last_join_nonce === b.last_join_nonce &&
  (a.state_dev_eui === null) === (b.state_dev_eui === null) &&
  a.last_dev_nonce === b.last_dev_nonce &&
  a.used_dev_nonces === b.used_dev_nonces &&
  a.last_rj_count1 === b.last_rj_count1;

const isBusy = (error: unknown): boolean => String((error as { code?: unknown } | null)?.code ?? '').startsWith('SQLITE_BUSY');

type Statements = ReturnType<typeof prepareStatements>;

/** The join path's statements, prepared once. */
function prepareStatements(db: BetterSqlite3.Database) {
  return {
    begin: db.prepare('begin immediate'),
    commit: db.prepare('commit'),
    rollback: db.prepare('rollback'),
    savepoint: db.prepare('savepoint reserve_join'),
    release: db.prepare('release reserve_join'),
    rollbackToSavepoint: db.prepare('rollback to reserve_join'),
    // One statement is enough: inside the group's transaction the write lock is held, so nothing changes between
    // reading the counter and the DevNonce state (PostgreSQL needs two, see kysely-storage.ts).
    read: db.prepare(
      `select d.last_join_nonce, s.dev_eui as state_dev_eui, s.last_dev_nonce, s.used_dev_nonces, s.last_rj_count1
       from devices d left join device_join_state s on s.dev_eui = d.dev_eui and s.join_eui = ?
       where d.dev_eui = ?`,
    ),
    updateJoinNonce: db.prepare('update devices set last_join_nonce = ? where dev_eui = ?'),
    upsertState: db.prepare(
      `insert into device_join_state (dev_eui, join_eui, last_dev_nonce, used_dev_nonces, last_rj_count1, updated_at)
       values (@dev_eui, @join_eui, @last_dev_nonce, @used_dev_nonces, @last_rj_count1, @updated_at)
       on conflict (dev_eui, join_eui) do update set last_dev_nonce = excluded.last_dev_nonce,
         used_dev_nonces = excluded.used_dev_nonces, last_rj_count1 = excluded.last_rj_count1, updated_at = excluded.updated_at`,
    ),
    insertSession: db.prepare(
      `insert into sessions (dev_eui, session_key_id, join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at)
       values (@dev_eui, @session_key_id, @join_eui, @scheme, @join_nonce, @dev_nonce, @net_id, @dev_addr, @created_at)`,
    ),
    // Keeps the sessionLimit most recent sessions of the device (seq orders them): deletes those older than the
    // sessionLimit-th newest, if there is one. Both halves are range searches of sessions_dev_eui_seq; the earlier
    // `seq not in (select … limit ?)` built a temporary set per join and cost ten times as much (27 µs against 2.7).
    pruneSessions: db.prepare(
      `delete from sessions where dev_eui = ? and seq <
         (select seq from sessions where dev_eui = ? order by seq desc limit 1 offset ?)`,
    ),
    insertAudit: db.prepare(
      `insert into audit_events (at, actor, action, subject, outcome, details, organisation)
       values (@at, @actor, @action, @subject, @outcome, @details, @organisation)`,
    ),
  };
}
