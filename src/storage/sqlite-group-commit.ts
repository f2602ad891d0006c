import type BetterSqlite3 from 'better-sqlite3';
import type { Eui64 } from '../protocol/index.js';
import { StorageError } from './errors.js';
import { backoff, checkDecision, storageFailure, type ErrorClass } from './kysely-storage.js';
import { auditToRow, initialJoinState, joinStateToRow, sessionToRow } from './records.js';
import type { JoinDecision, JoinState, ReserveJoinResult, SessionRecord } from './storage.js';

/*
 * Group commit for reserveJoin on SQLite (docs/storage.md, "Group commit").
 *
 * With synchronous=FULL every COMMIT fsyncs the WAL, and better-sqlite3 runs it on the event loop: one commit
 * per join made the fsync the largest single cost of a join and capped a process at a few hundred joins/s.
 * Here the reservations that arrive in one turn of the event loop (and those that queue up while a group
 * commits) share one BEGIN IMMEDIATE … COMMIT:
 *
 * - each reservation runs, in arrival order, inside its own SAVEPOINT: lock-and-read, decide, check, write.
 *   A refusal, a throw in `decide` or a failed write rolls back to the savepoint: that reservation changes
 *   nothing and the others are unaffected. Later reservations of the same device see earlier ones' writes
 *   (one transaction, one connection), so the DevNonce and JoinNonce rules hold inside a group exactly as
 *   they do across groups.
 * - every outcome — success, refusal or error — is delivered only after COMMIT returned, i.e. after the fsync.
 *   A refusal may depend on an earlier reservation of the same group, so it waits for the commit too.
 * - if BEGIN or COMMIT fails, the whole group is rolled back and every reservation in it fails with the
 *   StorageError: nothing of the group was written.
 * - another process holding the write lock (serve --processes N, or separate processes on one file) must not stall
 *   this process: SQLite's busy handler sleeps inside the call, i.e. on the event loop, in steps of up to 100 ms,
 *   and two processes handing the lock back and forth that way answered a few hundred joins/s with p99 over 2 s.
 *   So the group runs with busy_timeout 0: a BEGIN IMMEDIATE that finds the lock taken fails at once with
 *   SQLITE_BUSY, the group goes back to the head of the queue (requests arriving meanwhile join it), and it is
 *   tried again after the event loop has run (setImmediate, then every millisecond) until `busyTimeoutMs` after
 *   its oldest request; then the group fails, as a blocking busy_timeout would have. Nothing of the group ran, and
 *   `decide` is pure, so running it again is safe.
 * - audit events appended outside a join (refusals) ride in the next group: no transaction and no fsync of their
 *   own, and no blocking wait for the write lock either.
 *
 * Other processes on the same file serialize with whole groups through SQLite's write lock (BEGIN IMMEDIATE),
 * as they did with single reservations.
 */

/** One reservation, or one audit event, waiting for its group. */
type Pending = PendingReservation | PendingAudit;

interface PendingReservation {
  readonly kind: 'reserve';
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly decide: (current: JoinState) => JoinDecision<unknown>;
  readonly sessionLimit: number;
  /** performance.now() when queued: bounds how long it may wait for another process's write lock. */
  readonly since: number;
  readonly resolve: (result: ReserveJoinResult<unknown>) => void;
  readonly reject: (error: unknown) => void;
}

interface PendingAudit {
  readonly kind: 'audit';
  readonly row: ReturnType<typeof auditToRow>;
  readonly since: number;
  readonly resolve: (result: undefined) => void;
  readonly reject: (error: unknown) => void;
}

type Outcome =
  | { readonly ok: ReserveJoinResult<unknown> | undefined }
  | { readonly error: unknown };

/** SQLite's answer when the write lock is taken (SQLITE_BUSY and its extended codes). */
const isBusy = (error: unknown): boolean => String((error as { code?: unknown } | null)?.code ?? '').startsWith('SQLITE_BUSY');

export interface GroupCommitOptions {
  /** Most reservations in one transaction; more wait for the next group. */
  readonly maxGroupSize?: number;
  readonly classify: (error: unknown) => ErrorClass;
  readonly maxAttempts: number;
  /**
   * Runs `work` while no other statement or transaction uses the connection (Kysely's connection mutex), so a
   * group never starts inside a transaction that Kysely has open across an await.
   */
  readonly exclusive: <T>(work: () => T) => Promise<T>;
  /** Observes each committed group's size (tests, metrics). */
  readonly onGroupCommitted?: ((size: number) => void) | undefined;
  /** How long a request may wait for another process's write lock; the connection's busy_timeout outside groups. */
  readonly busyTimeoutMs: number;
  /** Observes each time a group found the write lock taken and was put back (tests). */
  readonly onBusy?: (() => void) | undefined;
}

interface JoinRow {
  readonly last_join_nonce: number;
  readonly state_dev_eui: string | null;
  readonly last_dev_nonce: number | null;
  readonly used_dev_nonces: string | null;
  readonly last_rj_count1: number | null;
}

export class SqliteGroupCommit {
  readonly #options: GroupCommitOptions;
  readonly #maxGroupSize: number;
  #queue: Pending[] = [];
  #draining = false;
  readonly #connection: BetterSqlite3.Database;
  #statements: Statements | undefined;

  constructor(connection: BetterSqlite3.Database, options: GroupCommitOptions) {
    this.#options = options;
    this.#maxGroupSize = options.maxGroupSize ?? 256;
    this.#connection = connection;
  }

  /** Prepared on first use: the tables exist only after migrate(). */
  get #s(): Statements {
    return (this.#statements ??= prepareStatements(this.#connection, this.#options.busyTimeoutMs));
  }

  reserve<R>(devEui: Eui64, joinEui: Eui64, decide: (current: JoinState) => JoinDecision<R>, sessionLimit: number): Promise<ReserveJoinResult<R>> {
    return new Promise<ReserveJoinResult<R>>((resolve, reject) => {
      this.#enqueue({ kind: 'reserve', devEui, joinEui, decide, sessionLimit, since: performance.now(), resolve: resolve as PendingReservation['resolve'], reject });
    });
  }

  /** Appends an audit event in the next group's transaction; resolves once that group committed. */
  appendAudit(row: ReturnType<typeof auditToRow>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#enqueue({ kind: 'audit', row, since: performance.now(), resolve: () => resolve(), reject });
    });
  }

  #enqueue(p: Pending): void {
    this.#queue.push(p);
    if (!this.#draining) {
      this.#draining = true;
      // After the current turn: every request whose handler reaches reserveJoin in this turn joins the group.
      setImmediate(() => void this.#drain());
    }
  }

  async #drain(): Promise<void> {
    try {
      let busyRounds = 0;
      while (this.#queue.length > 0) {
        const group = this.#queue.splice(0, this.#maxGroupSize);
        if ((await this.#commitGroup(group)) === 'busy') {
          // Back to the head of the queue, in order; whatever arrives meanwhile joins it on the next try.
          this.#queue.unshift(...group);
          this.#options.onBusy?.();
          busyRounds++;
          await new Promise<void>((resolve) => (busyRounds === 1 ? setImmediate(resolve) : setTimeout(resolve, 1)));
        } else {
          busyRounds = 0;
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  async #commitGroup(group: readonly Pending[]): Promise<'done' | 'busy'> {
    for (let attempt = 1; ; attempt++) {
      let outcomes: Outcome[];
      try {
        outcomes = await this.#options.exclusive(() => this.#runGroup(group));
      } catch (error) {
        if (isBusy(error) && performance.now() - group[0]!.since < this.#options.busyTimeoutMs) return 'busy';
        if (!isBusy(error) && this.#options.classify(error) === 'retry' && attempt < this.#options.maxAttempts) {
          await backoff(attempt);
          continue;
        }
        const failure = storageFailure('sqlite', error, 'reserveJoin (group commit)');
        for (const p of group) p.reject(failure);
        return 'done';
      }
      this.#options.onGroupCommitted?.(group.length);
      group.forEach((p, i) => {
        const outcome = outcomes[i]!;
        if ('ok' in outcome) (p.resolve as (v: unknown) => void)(outcome.ok);
        else p.reject(outcome.error);
      });
      return 'done';
    }
  }

  /**
   * One transaction for the group; throws (after rolling back) if BEGIN or COMMIT fails. busy_timeout is 0 while it
   * runs (see above: a taken write lock is waited for off the event loop), and restored for Kysely's statements.
   */
  #runGroup(group: readonly Pending[]): Outcome[] {
    const s = this.#s;
    s.noBusyWait.run();
    try {
      s.begin.run();
      try {
        const outcomes = group.map((p) => (p.kind === 'reserve' ? this.#reserveOne(p) : this.#appendOne(p)));
        // synchronous=FULL: COMMIT returns after the WAL is fsynced; only then are the outcomes delivered.
        s.commit.run();
        return outcomes;
      } catch (error) {
        if (s.connection.inTransaction) s.rollback.run();
        throw error;
      }
    } finally {
      s.busyWait.run();
    }
  }

  #appendOne(p: PendingAudit): Outcome {
    try {
      this.#s.insertAudit.run(p.row);
      return { ok: undefined };
    } catch (error) {
      if (isBusy(error)) throw error;
      return { error: storageFailure('sqlite', error, 'appendAudit') };
    }
  }

  #reserveOne(p: PendingReservation): Outcome {
    const s = this.#s;
    s.savepoint.run();
    try {
      const outcome = this.#decideAndWrite(p);
      if ('ok' in outcome && outcome.ok !== undefined && 'committed' in outcome.ok) {
        s.release.run();
      } else {
        s.rollbackToSavepoint.run();
        s.release.run();
      }
      return outcome;
    } catch (error) {
      s.rollbackToSavepoint.run();
      s.release.run();
      // Busy while holding the write lock should not happen; if it does, the whole group is tried again.
      if (this.#options.classify(error) === 'retry') throw error;
      return { error: storageFailure('sqlite', error, 'reserveJoin') };
    }
  }

  /** Lock-and-read (the group's BEGIN IMMEDIATE holds the write lock) → decide → check → write. */
  #decideAndWrite(p: PendingReservation): Outcome {
    const s = this.#s;
    const row = s.read.get(p.joinEui, p.devEui) as JoinRow | undefined;
    if (row === undefined) return { error: new StorageError('DEVICE_NOT_FOUND', `device ${p.devEui} not found`) };
    const current: JoinState =
      row.state_dev_eui === null
        ? initialJoinState(row.last_join_nonce)
        : {
            lastJoinNonce: row.last_join_nonce,
            lastDevNonce: row.last_dev_nonce,
            usedDevNonces: JSON.parse(row.used_dev_nonces ?? '[]') as number[],
            lastRjCount1: row.last_rj_count1,
          };
    let decision: JoinDecision<unknown>;
    try {
      decision = p.decide(current);
    } catch (error) {
      return { error };
    }
    if ('refuse' in decision) return { ok: { refused: decision.refuse } };
    const broken = checkDecision(p.devEui, p.joinEui, current, decision.commit, decision.session);
    if (broken !== undefined) return { error: broken };
    write(s, p.devEui, p.joinEui, decision.commit, decision.session, decision.audit === undefined ? undefined : auditToRow(decision.audit), p.sessionLimit);
    return { ok: { committed: decision.commit, session: decision.session } };
  }
}

function write(
  s: Statements,
  devEui: Eui64,
  joinEui: Eui64,
  commit: JoinState,
  session: SessionRecord,
  audit: ReturnType<typeof auditToRow> | undefined,
  sessionLimit: number,
): void {
  s.updateJoinNonce.run(commit.lastJoinNonce, devEui);
  // The decision's own instant (the engine's injected clock), not a clock read here.
  s.upsertState.run(joinStateToRow(devEui, joinEui, commit, session.createdAt.getTime()));
  s.insertSession.run(sessionToRow(session));
  s.pruneSessions.run(devEui, devEui, sessionLimit - 1);
  if (audit !== undefined) s.insertAudit.run(audit);
}

type Statements = ReturnType<typeof prepareStatements>;

/** The join path's statements, prepared once per connection. */
function prepareStatements(connection: BetterSqlite3.Database, busyTimeoutMs: number) {
  return {
    connection,
    // `pragma busy_timeout` acts when it is compiled, not when it runs: these must be prepared afresh each time.
    noBusyWait: { run: () => connection.pragma('busy_timeout = 0') },
    busyWait: { run: () => connection.pragma(`busy_timeout = ${Math.trunc(busyTimeoutMs)}`) },
    begin: connection.prepare('begin immediate'),
    commit: connection.prepare('commit'),
    rollback: connection.prepare('rollback'),
    savepoint: connection.prepare('savepoint reserve_join'),
    release: connection.prepare('release reserve_join'),
    rollbackToSavepoint: connection.prepare('rollback to reserve_join'),
    // One statement is enough here: the transaction holds the database's write lock, so nothing can change between
    // reading the counter and the DevNonce state (PostgreSQL needs two, see kysely-storage.ts).
    read: connection.prepare(
      `select d.last_join_nonce, s.dev_eui as state_dev_eui, s.last_dev_nonce, s.used_dev_nonces, s.last_rj_count1
       from devices d left join device_join_state s on s.dev_eui = d.dev_eui and s.join_eui = ?
       where d.dev_eui = ?`,
    ),
    updateJoinNonce: connection.prepare('update devices set last_join_nonce = ? where dev_eui = ?'),
    upsertState: connection.prepare(
      `insert into device_join_state (dev_eui, join_eui, last_dev_nonce, used_dev_nonces, last_rj_count1, updated_at)
       values (@dev_eui, @join_eui, @last_dev_nonce, @used_dev_nonces, @last_rj_count1, @updated_at)
       on conflict (dev_eui, join_eui) do update set last_dev_nonce = excluded.last_dev_nonce,
         used_dev_nonces = excluded.used_dev_nonces, last_rj_count1 = excluded.last_rj_count1, updated_at = excluded.updated_at`,
    ),
    insertSession: connection.prepare(
      `insert into sessions (dev_eui, session_key_id, join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at)
       values (@dev_eui, @session_key_id, @join_eui, @scheme, @join_nonce, @dev_nonce, @net_id, @dev_addr, @created_at)`,
    ),
    // Keeps the sessionLimit most recent sessions of the device (seq orders them): deletes those older than the
    // sessionLimit-th newest, if there is one. Both halves are range searches of sessions_dev_eui_seq; the earlier
    // `seq not in (select … limit ?)` built a temporary set per join and cost ten times as much (27 µs against 2.7).
    pruneSessions: connection.prepare(
      `delete from sessions where dev_eui = ? and seq <
         (select seq from sessions where dev_eui = ? order by seq desc limit 1 offset ?)`,
    ),
    insertAudit: connection.prepare(
      `insert into audit_events (at, actor, action, subject, outcome, details)
       values (@at, @actor, @action, @subject, @outcome, @details)`,
    ),
  };
}
