import pg from 'pg';
import { Kysely, PostgresDialect, type Selectable, sql } from 'kysely';
import type { Eui64 } from '../protocol/index.js';
import { StorageError } from './errors.js';
import { KyselyStorage, checkSessionLimit, type DialectSupport, type ErrorClass } from './kysely-storage.js';
import { postgresMigrations } from './migrations/postgres/index.js';
import { PostgresGroupCommit } from './postgres-group-commit.js';
import { seenRow } from './group-plan.js';
import type { BatchedLookup } from './batched-lookup.js';
import { postgresLookup } from './postgres-lookups.js';
import { DEVICE_ROW_COLUMNS, type DeviceForJoinRow, SEEN_STATE_COLUMNS, deviceForJoinFromRow, deviceFromRow, firstApplicationServer, peerFromRow } from './records.js';
import type { Database, PeersTable } from './schema.js';
import type { DeviceRecord, GroupCommitObserver, JoinDecision, JoinState, PeerRecord, ReserveJoinOptions, ReserveJoinResult, SeenJoinState } from './storage.js';

export interface PostgresStorageOptions {
  /** Pool size; default 10. */
  readonly maxConnections?: number;
  /** How long to wait for a connection; default 10 000 ms. */
  readonly connectTimeoutMs?: number;
  /** Told about errors of pooled connections, idle or checked out (the query or transaction using one fails anyway). */
  readonly onConnectionError?: (error: Error) => void;
  /** Most reservations committed in one transaction (group commit); default 128. */
  readonly maxGroupSize?: number | undefined;
  /** Groups committing at once, each on its own pooled connection; default 2. */
  readonly maxGroupsInFlight?: number | undefined;
  /** Told the size of each committed group (tests observe grouping with it). */
  readonly onGroupCommitted?: ((size: number) => void) | undefined;
  /** Told each batch of look-ups (getDevice, and the peer look-ups findPeerByTokenSha256 and findApplicationServer do not find kept) and its keys (tests). */
  readonly onLookupBatch?: ((operation: string, keys: number) => void) | undefined;
  /** Told each reservation written on the state its caller saw, and each one decided again on a locked read (tests). */
  readonly onSeen?: ((outcome: 'written' | 'decided again') => void) | undefined;
}

export interface PostgresSettings {
  readonly synchronousCommit: string;
  readonly fsync: string;
  readonly transactionIsolation: string;
  /** The isolation of the group commit's one-statement writes (postgres-seen-write.ts). */
  readonly groupWriteIsolation: string | undefined;
}

export class PostgresStorage extends KyselyStorage {
  readonly #groupCommit: PostgresGroupCommit;
  readonly #devices: BatchedLookup<DeviceRow>;
  readonly #devicesForJoin: BatchedLookup<DeviceForJoinRow>;
  #seenPool: pg.Pool | undefined;
  readonly #peersByToken: BatchedLookup<PeerRow>;
  readonly #applicationServers: BatchedLookup<PeerRow>;

  /** `seenPool`: connections whose transactions are REPEATABLE READ, for the group commit's one-statement writes. */
  constructor(db: Kysely<Database>, pool: pg.Pool, options: PostgresStorageOptions = {}, seenPool?: pg.Pool) {
    super(db, postgresDialect);
    this.#seenPool = seenPool;
    // The join path's look-ups, batched per turn of the event loop (postgres-lookups.ts).
    // Named columns, not `*`: a prepared statement whose result columns change (another instance's migration adding
    // one) would fail with "cached plan must not change result type" on every connection that prepared it.
    const lookup = <Row,>(operation: string, text: string, keyOf: (row: Row) => string) => postgresLookup(pool, operation, text, keyOf, options.onLookupBatch);
    this.#devices = lookup<DeviceRow>('getDevice', `select ${DEVICE_COLUMNS} from devices where dev_eui = any($1::text[])`, (r) => r.dev_eui);
    // LATERAL … LIMIT 1 (the key is unique; the limit keeps the planner from flattening it into a join): one
    // primary-key probe of device_join_state per device. As a plain join the planner hashed the whole table, a
    // sequential scan per batch that grows with the fleet.
    this.#devicesForJoin = lookup<DeviceForJoinRow>(
      'getDeviceForJoin',
      `select ${DEVICE_ROW_COLUMNS.map((c) => `d.${c}`).join(', ')}, ${SEEN_STATE_COLUMNS.join(', ')}
       from devices d
         left join lateral (select * from device_join_state s where s.dev_eui = d.dev_eui and s.join_eui = d.join_eui limit 1) s on true
       where d.dev_eui = any($1::text[])`,
      (r) => r.dev_eui,
    );
    this.#peersByToken = lookup<PeerRow>('findPeerByTokenSha256', `select ${PEER_COLUMNS} from peers where token_sha256 = any($1::text[])`, (r) => r.token_sha256!);
    this.#applicationServers = lookup<PeerRow>('findApplicationServer', `select ${PEER_COLUMNS} from peers where kind = 'as' and as_id = any($1::text[])`, (r) => r.as_id!);
    this.#groupCommit = new PostgresGroupCommit(pool, {
      maxGroupSize: options.maxGroupSize,
      maxGroupsInFlight: options.maxGroupsInFlight,
      classify: postgresDialect.classify,
      maxAttempts: postgresDialect.maxAttempts,
      // The fallback when a group fails: one transaction per reservation (kysely-storage.ts).
      alone: (p) => super.reserveJoin(p.devEui, p.joinEui, p.decide, { sessionLimit: p.sessionLimit }),
      onGroupCommitted: options.onGroupCommitted,
      seenPool,
      onSeen: options.onSeen,
    });
  }

  /**
   * Same contract as on every storage; the reservations that arrive together share one transaction (group commit,
   * see postgres-group-commit.ts). Each still resolves only after its COMMIT.
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

  override async getDevice(devEui: Eui64): Promise<DeviceRecord | undefined> {
    const [row] = await this.#devices.get(devEui);
    return row === undefined ? undefined : deviceFromRow(row);
  }

  override async getDeviceForJoin(devEui: Eui64): Promise<{ readonly device: DeviceRecord; readonly seen: SeenJoinState } | undefined> {
    const [row] = await this.#devicesForJoin.get(devEui);
    return row === undefined ? undefined : deviceForJoinFromRow(row);
  }

  protected override async readPeerByTokenSha256(tokenSha256: string): Promise<PeerRecord | undefined> {
    const [row] = await this.#peersByToken.get(tokenSha256);
    return row === undefined ? undefined : peerFromRow(row);
  }

  protected override async readApplicationServer(asId: string): Promise<PeerRecord | undefined> {
    return firstApplicationServer(await this.#applicationServers.get(asId));
  }

  /**
   * Nothing to ready: the pools connect on demand (opening connections ahead would not last, since an idle pooled
   * connection closes after 10 s), and opening the storage has already connected and run the migrations.
   */
  override async prepareForJoins(): Promise<void> {}

  /** Tells `observer` about every group commit that wrote something (metrics); replaces the previous observer. */
  observeGroupCommits(observer: GroupCommitObserver): void {
    this.#groupCommit.observeDurableWrites(observer);
  }

  /** Lets the queued and committing groups finish before the pool ends. */
  override async close(): Promise<void> {
    await this.#groupCommit.whenIdle();
    await super.close();
    const seenPool = this.#seenPool;
    this.#seenPool = undefined;
    await seenPool?.end();
  }

  async settings(): Promise<PostgresSettings> {
    const show = async (name: string): Promise<string> => {
      const { rows } = await sql<Record<string, string>>`show ${sql.raw(name)}`.execute(this.db);
      return String(rows[0]?.[name]);
    };
    const seen = await this.#seenPool?.query<{ transaction_isolation: string }>('show transaction_isolation');
    return {
      synchronousCommit: await show('synchronous_commit'),
      fsync: await show('fsync'),
      transactionIsolation: await show('transaction_isolation'),
      groupWriteIsolation: seen?.rows[0]?.transaction_isolation,
    };
  }
}

/** The columns the batched look-ups read: what deviceFromRow and peerFromRow take. */
const DEVICE_COLUMNS = DEVICE_ROW_COLUMNS.join(', ');
const PEER_COLUMNS = 'id, kind, net_id, ns_id, as_id, token_sha256, client_cert_sha256, kek_label, allow_clear_keys, created_at, organisation';
type DeviceRow = Parameters<typeof deviceFromRow>[0];
type PeerRow = Selectable<PeersTable>;

const INT8_OID = 20;

/**
 * BIGINT (epoch milliseconds, identity columns, count(*)) as a JS number. pg returns strings by default;
 * every value we store fits in 2^53, and a value that does not is an error rather than a silent rounding.
 */
function parseInt8(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new RangeError(`BIGINT ${text} does not fit a JS number`);
  return value;
}

const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseInt8 : pg.types.getTypeParser(oid, format ?? 'text')) as typeof pg.types.getTypeParser,
};

/**
 * Opens a pool on `url` and checks the server answers. Call `migrate()` before use.
 * Durability: with synchronous_commit on (the default), COMMIT returns only once the commit record is flushed
 * to the WAL on disk (and, with synchronous standbys, on theirs), so a JoinNonce is durable before reserveJoin
 * resolves. A server configured with synchronous_commit=off could lose a committed JoinNonce in a crash and issue
 * it again; `local` does not wait for synchronous standbys, so a failover could lose it (docs/operations.md). Our
 * sessions turn both back to `on`; remote_write and remote_apply are kept.
 */
export async function openPostgresStorage(url: string, options: PostgresStorageOptions = {}): Promise<PostgresStorage> {
  let pool = createPool(url, options, false);
  let forceSynchronousCommit = false;
  try {
    const { rows } = await pool.query<{ synchronous_commit: string }>('show synchronous_commit');
    if (rows[0]?.synchronous_commit === 'off' || rows[0]?.synchronous_commit === 'local') {
      await pool.end();
      forceSynchronousCommit = true;
      pool = createPool(url, options, true);
      await pool.query('select 1');
    }
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw new StorageError('UNAVAILABLE', `cannot connect to PostgreSQL: ${(error as Error).message}`, { cause: error });
  }
  // The group commit's one-statement writes need REPEATABLE READ (postgres-seen-write.ts): connections of their own,
  // one per group in flight, so every other statement keeps READ COMMITTED.
  const seenPool = createPool(url, { ...options, maxConnections: options.maxGroupsInFlight ?? 2 }, forceSynchronousCommit, 'repeatable read');
  return new PostgresStorage(new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }), pool, options, seenPool);
}

function createPool(url: string, options: PostgresStorageOptions, forceSynchronousCommit: boolean, isolation?: 'repeatable read'): pg.Pool {
  // Startup options: spaces inside a value are escaped with a backslash (PostgreSQL's `options` connection parameter).
  const settings = [
    ...(forceSynchronousCommit ? ['-c synchronous_commit=on'] : []),
    ...(isolation === undefined ? [] : [`-c default_transaction_isolation=${isolation.replace(/ /g, '\\ ')}`]),
  ];
  const pool = new pg.Pool({
    connectionString: url,
    max: options.maxConnections ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
    application_name: 'joinkeep',
    ...(settings.length > 0 ? { options: settings.join(' ') } : {}),
    types,
  });
  // A connection that ends (the server restarted, the backend was terminated) emits 'error' on its client, and pg-pool
  // passes an idle client's on to the pool: without listeners either would end the process. pg-pool listens on idle
  // clients only, so every client gets a listener of its own when it connects, which also covers a client checked out
  // between two statements of a transaction; that transaction learns of it anyway (its next query fails, and the pool
  // discards the client on release). Reported once, from the client's listener.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', (error) => options.onConnectionError?.(error)));
  return pool;
}

const postgresDialect: DialectSupport = {
  kind: 'postgres',
  migrations: postgresMigrations,
  lockDevice: (trx, devEui: Eui64) =>
    trx.selectFrom('devices').select('last_join_nonce').where('dev_eui', '=', devEui).forUpdate().executeTakeFirst(),
  lockRows: true,
  classify: (error: unknown): ErrorClass => {
    const code = (error as { code?: unknown } | null)?.code;
    if (code === '23505') return 'unique-violation';
    // serialization_failure, deadlock_detected: the transaction was rolled back and may simply be run again.
    if (code === '40001' || code === '40P01') return 'retry';
    return 'other';
  },
  maxAttempts: 5,
};
