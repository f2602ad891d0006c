import {
  CompiledQuery,
  Kysely,
  SqliteAdapter,
  SqliteDialect,
  SqliteDriver,
  sql,
  type DatabaseConnection,
  type DialectAdapter,
  type Driver,
  type SqliteDialectConfig,
  type SqlBool,
} from 'kysely';
import type { Eui64 } from '../protocol/index.js';
import { StorageError } from './errors.js';
import { KyselyStorage, checkSessionLimit, type DialectSupport, type ErrorClass } from './kysely-storage.js';
import { SQLITE_BUSY_TIMEOUT_MS, openSqliteConnection } from './sqlite-connection.js';
import { SqliteGroupCommit } from './sqlite-group-commit.js';
import { withStatementCache } from './sqlite-statement-cache.js';
import { BatchedLookup } from './batched-lookup.js';
import { seenRow } from './group-plan.js';
import { SqliteWriter } from './sqlite-writer.js';
import type { CheckpointSettings, CheckpointTotals, WriterSettings } from './sqlite-writer-protocol.js';
import { DEVICE_ROW_COLUMNS, type DeviceForJoinRow, SEEN_STATE_COLUMNS, auditToRow, deviceForJoinFromRow } from './records.js';
import type { AuditEvent, DeviceRecord, GroupCommitObserver, JoinDecision, JoinState, ReserveJoinOptions, ReserveJoinResult, SeenJoinState } from './storage.js';
import { sqliteMigrations } from './migrations/sqlite/index.js';
import type { Database } from './schema.js';

export { SQLITE_BUSY_TIMEOUT_MS };

/** The durability-relevant settings of the open connection, as SQLite reports them. */
export interface SqliteSettings {
  readonly journalMode: string;
  /** 2 = FULL. */
  readonly synchronous: number;
  readonly foreignKeys: boolean;
  readonly busyTimeoutMs: number;
  /** The writer thread's connection, which commits the join path's state (sqlite-writer-thread.ts). */
  readonly writer: WriterSettings;
}

export class SqliteStorage extends KyselyStorage {
  readonly #groupCommit: SqliteGroupCommit;
  readonly #writer: SqliteWriter;
  readonly #devicesForJoin: BatchedLookup<DeviceForJoinRow>;

  constructor(db: Kysely<Database>, path: string, options: SqliteStorageOptions = {}) {
    super(db, sqliteDialect);
    // The join's device look-ups of one turn share one statement (batched-lookup.ts). Each commit of the writer thread
    // makes SQLite drop this connection's page cache, so every read after it fetches its pages again: one statement
    // walks the upper pages of both indexes once for the whole batch instead of once per device.
    const forJoin = db
      .selectFrom('devices as d')
      .leftJoin('device_join_state as s', (join) => join.onRef('s.dev_eui', '=', 'd.dev_eui').onRef('s.join_eui', '=', 'd.join_eui'))
      .select([...DEVICE_ROW_COLUMNS.map((c) => `d.${c}` as const), ...SEEN_STATE_COLUMNS])
      .where(sql<SqlBool>`d.dev_eui in (select value from json_each(${'[]'}))`)
      .compile().sql;
    this.#devicesForJoin = new BatchedLookup<DeviceForJoinRow>(
      'sqlite',
      'getDeviceForJoin',
      async (keys) => (await db.executeQuery<DeviceForJoinRow>(CompiledQuery.raw(forJoin, [JSON.stringify(keys)]))).rows,
      (row) => row.dev_eui,
      options.onLookupBatch,
    );
    this.#writer = new SqliteWriter(path, options.checkpoints);
    this.#groupCommit = new SqliteGroupCommit(this.#writer, {
      maxGroupSize: options.maxGroupSize,
      minGroupSize: options.minGroupSize,
      classify: sqliteDialect.classify,
      maxAttempts: sqliteDialect.maxAttempts,
      onGroupCommitted: options.onGroupCommitted,
      onBusy: options.onBusy,
      busyTimeoutMs: SQLITE_BUSY_TIMEOUT_MS,
    });
  }

  /** Rides in the next group commit: no transaction, fsync or blocking lock wait of its own. */
  override async appendAudit(event: AuditEvent): Promise<void> {
    await this.#groupCommit.appendAudit(auditToRow(event));
  }

  /**
   * Same contract as on every storage; on SQLite the reservations that arrive together share one transaction
   * and one fsync (group commit, see sqlite-group-commit.ts). Each still resolves only after its COMMIT.
   */
  override async reserveJoin<R>(
    devEui: Eui64,
    joinEui: Eui64,
    decide: (current: JoinState) => JoinDecision<R>,
    options: ReserveJoinOptions,
  ): Promise<ReserveJoinResult<R>> {
    checkSessionLimit(options.sessionLimit);
    return this.#groupCommit.reserve(devEui, joinEui, decide, options.sessionLimit, seenRow(devEui, joinEui, options));
  }

  override async getDeviceForJoin(devEui: Eui64): Promise<{ readonly device: DeviceRecord; readonly seen: SeenJoinState } | undefined> {
    const [row] = await this.#devicesForJoin.get(devEui);
    return row === undefined ? undefined : deviceForJoinFromRow(row);
  }

  /*
   * SQLite's procedure for schema changes (https://www.sqlite.org/lang_altertable.html#otheralter): foreign keys
   * off while migrations run, otherwise rebuilding a parent table (create, copy, drop, rename) would cascade the
   * drop's deletes into its children. The pragma cannot change inside a transaction, hence here, around the
   * Migrator's transaction; the check afterwards refuses a migration that left dangling references.
   */
  override async migrate(): Promise<void> {
    await sql`pragma foreign_keys = off`.execute(this.db);
    try {
      await super.migrate();
    } finally {
      await sql`pragma foreign_keys = on`.execute(this.db);
    }
    const { rows } = await sql`pragma foreign_key_check`.execute(this.db);
    if (rows.length > 0) {
      throw new StorageError('UNAVAILABLE', `database migration left ${rows.length} foreign key violation(s)`);
    }
  }

  async settings(): Promise<SqliteSettings> {
    const pragma = async (name: string): Promise<unknown> => {
      const { rows } = await sql<Record<string, unknown>>`pragma ${sql.raw(name)}`.execute(this.db);
      return Object.values(rows[0] ?? {})[0];
    };
    return {
      journalMode: String(await pragma('journal_mode')),
      synchronous: Number(await pragma('synchronous')),
      foreignKeys: Number(await pragma('foreign_keys')) === 1,
      busyTimeoutMs: Number(await pragma('busy_timeout')),
      writer: await this.#writer.settings(),
    };
  }

  /**
   * Starts the writer thread and its checkpointer, and has it prepare the join statements. Started on the first
   * reservation instead, they made the first Join-request after a start take about 115 ms instead of about 40
   * (docs/performance.md).
   */
  override async prepareForJoins(): Promise<void> {
    await this.#writer.start();
  }

  /** Tells `observer` about every group commit that wrote something (metrics); replaces the previous observer. */
  observeGroupCommits(observer: GroupCommitObserver): void {
    this.#groupCommit.observeDurableWrites(observer);
  }

  /** Running totals of the checkpointer thread (docs/storage.md, "Checkpoints"), for metrics. */
  checkpointTotals(): CheckpointTotals {
    return this.#writer.checkpointTotals();
  }

  override async close(): Promise<void> {
    await this.#writer.close();
    await super.close();
  }
}

/**
 * Opens (creating with mode 0600 if needed) the SQLite database at `path`. Call `migrate()` before use.
 * Several processes may open the same file: the nonce guarantee holds across them (see docs/storage.md).
 */
export interface SqliteStorageOptions {
  /** Most reservations committed in one transaction (group commit); default 256. */
  readonly maxGroupSize?: number | undefined;
  /** The size groups start from and return to without a backlog (sqlite-group-commit.ts); default 16. */
  readonly minGroupSize?: number | undefined;
  /** Told the size of each committed group (tests observe grouping with it). */
  readonly onGroupCommitted?: ((size: number) => void) | undefined;
  /** Told each time a group found the write lock held by another connection and was put back (tests). */
  readonly onBusy?: (() => void) | undefined;
  /** When the checkpointer thread copies the WAL into the database file; default DEFAULT_CHECKPOINTS (sqlite-writer.ts). */
  readonly checkpoints?: CheckpointSettings | undefined;
  /** Told each batch of the join's device look-ups: the operation and how many distinct keys it read (tests). */
  readonly onLookupBatch?: ((operation: string, keys: number) => void) | undefined;
}

export async function openSqliteStorage(path: string, options: SqliteStorageOptions = {}): Promise<SqliteStorage> {
  const connection = openSqliteConnection(path, SQLITE_BUSY_TIMEOUT_MS);
  const db = new Kysely<Database>({ dialect: new ImmediateSqliteDialect({ database: withStatementCache(connection) }) });
  return new SqliteStorage(db, path, options);
}

/*
 * Kysely's SQLite driver starts transactions with a deferred BEGIN. A deferred transaction that reads and then
 * writes fails with SQLITE_BUSY_SNAPSHOT, without waiting, when another process committed in between. Every
 * transaction here starts with BEGIN IMMEDIATE instead: it takes the write lock up front (waiting up to
 * busy_timeout), so reserveJoin reads the latest committed state and nobody else writes until it commits.
 */
class ImmediateTransactionDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

/**
 * SQLite DDL is transactional; saying so makes Kysely's Migrator run each migration batch in one (immediate)
 * transaction, so a migration is all-or-nothing and two processes starting at once cannot both apply it.
 */
class TransactionalDdlAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  readonly #config: SqliteDialectConfig;

  constructor(config: SqliteDialectConfig) {
    super(config);
    this.#config = config;
  }

  override createDriver(): Driver {
    return new ImmediateTransactionDriver(this.#config);
  }

  override createAdapter(): DialectAdapter {
    return new TransactionalDdlAdapter();
  }
}

const sqliteDialect: DialectSupport = {
  kind: 'sqlite',
  migrations: sqliteMigrations,
  // The transaction began IMMEDIATE and holds the database's write lock: a plain read is already exclusive.
  lockDevice: (trx, devEui: Eui64) =>
    trx.selectFrom('devices').select('last_join_nonce').where('dev_eui', '=', devEui).executeTakeFirst(),
  lockRows: false,
  classify: (error: unknown): ErrorClass => {
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code !== 'string') return 'other';
    if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') return 'unique-violation';
    // busy_timeout has already waited; a further BUSY (e.g. during WAL recovery) is worth a fresh attempt.
    if (code.startsWith('SQLITE_BUSY')) return 'retry';
    return 'other';
  },
  maxAttempts: 3,
};

