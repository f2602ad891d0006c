import { type Compilable, CompiledQuery, type Kysely, type Migration, type Transaction, sql } from 'kysely';
import type { Eui64, NetId } from '../protocol/index.js';
import { decodeAuditCursor, decodeDeviceCursor, decodeInventoryCursor, encodeCursor, pageSize } from './cursor.js';
import { StorageError, type StorageErrorCode } from './errors.js';
import { applyMigrations } from './migrate.js';
import {
  DEVICE_ROW_COLUMNS,
  firstApplicationServer,
  auditFromRow,
  auditToRow,
  deviceFromRow,
  deviceToRow,
  joinStateFromRow,
  joinStateToRow,
  keyRecordFromRow,
  keyRecordToRow,
  peerFromRow,
  peerToRow,
  sessionFromRow,
  sessionToRow,
} from './records.js';
import * as commissioning from './commissioning-store.js';
import * as personalization from './personalization-store.js';
import { makerFromRow, makerToRow } from './personalization-store.js';
import { PeerLookups } from './peer-lookups.js';
import type { Database } from './schema.js';
import type {
  ApiKeyRecord,
  ClaimChange,
  FoundDevice,
  OrganisationRecord,
  OwnedBinding,
  OwnedDeviceFilter,
  OwnershipTransferRecord,
  AuditEvent,
  BatchImport,
  BatchRecord,
  DerivationKeyRecord,
  DeviceBinding,
  InventoryDevice,
  TransferRecord,
  MakerRecord,
  DeviceRecord,
  JoinDecision,
  JoinState,
  ListOptions,
  PeerRecord,
  ReserveJoinOptions,
  ReserveJoinResult,
  SealedKeyRecord,
  SeenJoinState,
  SessionRecord,
  Storage,
} from './storage.js';

/*
 * Bulk writes of sealed key records, for the software keystore's sealed-batch imports (issue 5). Declared into the
 * Storage contract from here, next to their one implementation, because this change keeps to this file; the
 * storage owner may move the two lines into storage.ts.
 */
/** Rows per multi-row INSERT or IN list of the bulk key-record writes (4 parameters a row). */
const KEY_RECORD_CHUNK = 500;

/** How a driver error should be handled. */
export type ErrorClass = 'unique-violation' | 'retry' | 'other';

/** The part of the storage that differs between SQLite and PostgreSQL. */
export interface DialectSupport {
  readonly kind: 'sqlite' | 'postgres';
  readonly migrations: Readonly<Record<string, Migration>>;
  /**
   * Reads the device's JoinNonce counter inside `trx` such that no other transaction can change the device's
   * join state until `trx` ends. PostgreSQL: `SELECT … FOR UPDATE`. SQLite: a plain SELECT, because every
   * transaction there starts with BEGIN IMMEDIATE and so already holds the database's write lock.
   */
  lockDevice(trx: Transaction<Database>, devEui: Eui64): Promise<{ last_join_nonce: number } | undefined>;
  /** Whether other rows a transaction reads must be locked explicitly (`FOR UPDATE`): PostgreSQL yes, SQLite no. */
  readonly lockRows: boolean;
  classify(error: unknown): ErrorClass;
  /** Attempts for a transaction that fails with a `retry` error (serialization failure, deadlock, busy). */
  readonly maxAttempts: number;
}

/** How long a peer look-up is kept; another process's peer write is seen within it (peer-lookups.ts). */
export const PEER_LOOKUP_TTL_MS = 1000;

/** JoinNonce is 3 bytes (LoRaWAN 1.0.4 §6.2.3, 1.1 §6.2.3). */
const MAX_JOIN_NONCE = 0xffffff;

/** `decide` refused: roll back and hand the reason to the caller. */
class Refusal<R> {
  constructor(readonly reason: R) {}
}

/** An error that is not the database's (thrown by `decide`, or a broken invariant): roll back, rethrow as is. */
class Passthrough {
  constructor(readonly error: unknown) {}
}

/**
 * The Storage contract over Kysely, shared by SQLite and PostgreSQL. Only locking, error classification and
 * the migration set come from the dialect.
 */
export abstract class KyselyStorage implements Storage {
  readonly kind: 'sqlite' | 'postgres';
  #closed = false;
  /** SQL text of the hot read statements, compiled once by name (see #query). */
  readonly #compiled = new Map<string, string>();
  /** Peer look-ups of the request path, kept for a second (peer-lookups.ts). */
  readonly #peers = new PeerLookups(PEER_LOOKUP_TTL_MS);

  constructor(
    protected readonly db: Kysely<Database>,
    private readonly dialect: DialectSupport,
  ) {
    this.kind = dialect.kind;
  }

  async migrate(): Promise<void> {
    try {
      await applyMigrations(this.db as unknown as Kysely<unknown>, this.dialect.migrations);
    } catch (error) {
      throw this.#fail(error, 'migrate');
    }
  }

  // Devices

  async insertDevice(device: DeviceRecord): Promise<void> {
    await this.#run('insertDevice', () => this.db.insertInto('devices').values(deviceToRow(device)).execute(), [
      'DEVICE_EXISTS',
      `device ${device.devEui} already exists`,
    ]);
  }

  async getDevice(devEui: Eui64): Promise<DeviceRecord | undefined> {
    const [row] = await this.#query('getDevice', () => this.db.selectFrom('devices').select(DEVICE_ROW_COLUMNS).where('dev_eui', '=', devEui), [devEui]);
    return row === undefined ? undefined : deviceFromRow(row);
  }

  /** Each storage readies its own join path (its writer thread, or nothing). */
  abstract prepareForJoins(): Promise<void>;
  /** The device with the join state its JoinEUI has, for reserveJoin's `seen`: each storage batches it its own way. */
  abstract getDeviceForJoin(devEui: Eui64): Promise<{ readonly device: DeviceRecord; readonly seen: SeenJoinState } | undefined>;

  async listDevices(options: ListOptions = {}): Promise<{ items: DeviceRecord[]; next?: string }> {
    const limit = pageSize(options.limit);
    const after = options.after === undefined ? undefined : decodeDeviceCursor(options.after);
    const rows = await this.#run('listDevices', () => {
      let query = this.db.selectFrom('devices').selectAll().orderBy('dev_eui').limit(limit + 1);
      if (after !== undefined) query = query.where('dev_eui', '>', after);
      return query.execute();
    });
    const page = rows.slice(0, limit).map(deviceFromRow);
    const last = page.at(-1);
    return rows.length > limit && last !== undefined ? { items: page, next: encodeCursor('device', last.devEui) } : { items: page };
  }

  async deleteDevice(devEui: Eui64): Promise<boolean> {
    // Join state and sessions go with the device (ON DELETE CASCADE); audit events stay.
    const result = await this.#run('deleteDevice', () =>
      this.db.deleteFrom('devices').where('dev_eui', '=', devEui).executeTakeFirst(),
    );
    return result.numDeletedRows > 0n;
  }

  async servesJoinEui(joinEui: Eui64): Promise<boolean> {
    const [row] = await this.#query(
      'servesJoinEui',
      () => this.db.selectFrom('devices').select('dev_eui').where('join_eui', '=', joinEui).limit(1),
      [joinEui, 1],
    );
    if (row !== undefined) return true;
    // Unbound devices (a maker's stock, claimed but not bound) are ours too: their JoinEUI is served here.
    const [unbound] = await this.#query(
      'servesJoinEuiUnbound',
      () => this.db.selectFrom('device_inventory').select('dev_eui').where('join_eui', '=', joinEui).limit(1),
      [joinEui, 1],
    );
    return unbound !== undefined;
  }

  async getJoinState(devEui: Eui64, joinEui: Eui64): Promise<JoinState> {
    // One statement, so the JoinNonce counter and the DevNonce state come from the same snapshot.
    const row = await this.#run('getJoinState', () =>
      this.db
        .selectFrom('devices as d')
        .leftJoin('device_join_state as s', (join) =>
          join.onRef('s.dev_eui', '=', 'd.dev_eui').on('s.join_eui', '=', joinEui),
        )
        .select([
          'd.last_join_nonce',
          's.dev_eui as state_dev_eui',
          's.last_dev_nonce',
          's.used_dev_nonces',
          's.last_rj_count1',
        ])
        .where('d.dev_eui', '=', devEui)
        .executeTakeFirst(),
    );
    if (row === undefined) throw new StorageError('DEVICE_NOT_FOUND', `device ${devEui} not found`);
    if (row.state_dev_eui === null) return joinStateFromRow(row.last_join_nonce, undefined);
    return {
      lastJoinNonce: row.last_join_nonce,
      lastDevNonce: row.last_dev_nonce,
      usedDevNonces: JSON.parse(row.used_dev_nonces ?? '[]') as number[],
      lastRjCount1: row.last_rj_count1,
    };
  }

  /*
   * reserveJoin in one transaction per reservation: on PostgreSQL the fallback of a group that failed (both storages
   * override reserveJoin with group commit, postgres-group-commit.ts and sqlite-group-commit.ts). The nonce guarantee (DESIGN: "JoinNonce … is committed before the answer leaves"; STYLE rule 5). One
   * transaction: lock the device, read its state, let `decide` choose, write everything, COMMIT, and only then
   * resolve. A refusal or a throw rolls back, so a refused request never burns a nonce. `decide` may run more
   * than once when the database asks for a retry (PostgreSQL deadlock/serialization failure, SQLite busy), so it
   * must not have side effects beyond its return value.
   */
  async reserveJoin<R>(
    devEui: Eui64,
    joinEui: Eui64,
    decide: (current: JoinState) => JoinDecision<R>,
    options: ReserveJoinOptions,
  ): Promise<ReserveJoinResult<R>> {
    // One transaction per reservation locks and reads the state anyway: `seen` saves nothing here.
    const { sessionLimit } = options;
    checkSessionLimit(sessionLimit);
    for (let attempt = 1; ; attempt++) {
      try {
        // Kysely's execute() resolves only after COMMIT returned: when this returns, the new JoinNonce is durable.
        return await this.db.transaction().execute((trx) => this.#reserveIn(trx, devEui, joinEui, decide, sessionLimit));
      } catch (error) {
        if (error instanceof Refusal) return { refused: (error as Refusal<R>).reason };
        if (error instanceof Passthrough) throw error.error;
        if (this.dialect.classify(error) === 'retry' && attempt < this.dialect.maxAttempts) {
          await backoff(attempt);
          continue;
        }
        throw this.#fail(error, 'reserveJoin');
      }
    }
  }

  /** reserveJoin's steps inside the transaction: lock and read → decide → check → write. */
  async #reserveIn<R>(
    trx: Transaction<Database>,
    devEui: Eui64,
    joinEui: Eui64,
    decide: (current: JoinState) => JoinDecision<R>,
    sessionLimit: number,
  ): Promise<{ committed: JoinState; session: SessionRecord }> {
    const current = await this.#lockAndRead(trx, devEui, joinEui);
    let decision: JoinDecision<R>;
    try {
      decision = decide(current);
    } catch (error) {
      throw new Passthrough(error);
    }
    if ('refuse' in decision) throw new Refusal(decision.refuse);
    const broken = checkDecision(devEui, joinEui, current, decision.commit, decision.session);
    if (broken !== undefined) throw new Passthrough(broken);
    await writeDecisionPostgres(trx, devEui, joinEui, decision, sessionLimit);
    return { committed: decision.commit, session: decision.session };
  }

  async #lockAndRead(trx: Transaction<Database>, devEui: Eui64, joinEui: Eui64): Promise<JoinState> {
    const device = await this.dialect.lockDevice(trx, devEui);
    if (device === undefined) throw new Passthrough(new StorageError('DEVICE_NOT_FOUND', `device ${devEui} not found`));
    // Read after the lock, in its own statement: on PostgreSQL (READ COMMITTED) a statement that starts after the
    // lock was granted sees what the previous holder committed; one joined statement could see an older snapshot.
    const stateRow = await trx
      .selectFrom('device_join_state')
      .selectAll()
      .where('dev_eui', '=', devEui)
      .where('join_eui', '=', joinEui)
      .executeTakeFirst();
    return joinStateFromRow(device.last_join_nonce, stateRow);
  }

  async getSession(devEui: Eui64, sessionKeyId: string): Promise<SessionRecord | undefined> {
    const [row] = await this.#query(
      'getSession',
      () => this.db.selectFrom('sessions').selectAll().where('dev_eui', '=', devEui).where('session_key_id', '=', sessionKeyId),
      [devEui, sessionKeyId],
    );
    return row === undefined ? undefined : sessionFromRow(row);
  }

  /** Most recent first. */
  async listSessions(devEui: Eui64): Promise<SessionRecord[]> {
    const rows = await this.#run('listSessions', () =>
      this.db.selectFrom('sessions').selectAll().where('dev_eui', '=', devEui).orderBy('seq', 'desc').execute(),
    );
    return rows.map(sessionFromRow);
  }

  // Peers

  async insertPeer(peer: PeerRecord): Promise<void> {
    // The id, the token hash and the certificate fingerprint are each unique: one credential, one peer.
    await this.#changingPeers(() =>
      this.#run('insertPeer', () => this.db.insertInto('peers').values(peerToRow(peer)).execute(), [
        'PEER_EXISTS',
        `peer ${peer.id}, or a peer with the same token or client certificate, already exists`,
      ]),
    );
  }

  /** Look-ups kept from before the write, or read while it ran, are dropped: this process sees its write at once. */
  async #changingPeers<T>(write: () => Promise<T>): Promise<T> {
    this.#peers.clear();
    try {
      return await write();
    } finally {
      this.#peers.clear();
    }
  }

  findPeerByTokenSha256(tokenSha256: string): Promise<PeerRecord | undefined> {
    return this.#peers.find(`token ${tokenSha256}`, () => this.readPeerByTokenSha256(tokenSha256));
  }

  /** The look-up behind findPeerByTokenSha256's kept answers. */
  protected async readPeerByTokenSha256(tokenSha256: string): Promise<PeerRecord | undefined> {
    const [row] = await this.#query(
      'findPeerByTokenSha256',
      () => this.db.selectFrom('peers').selectAll().where('token_sha256', '=', tokenSha256),
      [tokenSha256],
    );
    return row === undefined ? undefined : peerFromRow(row);
  }

  findPeerByClientCertSha256(fingerprint: string): Promise<PeerRecord | undefined> {
    return this.#peers.find(`cert ${fingerprint}`, () => this.#findPeerByClientCertSha256(fingerprint));
  }

  async #findPeerByClientCertSha256(fingerprint: string): Promise<PeerRecord | undefined> {
    const [row] = await this.#query(
      'findPeerByClientCertSha256',
      () => this.db.selectFrom('peers').selectAll().where('client_cert_sha256', '=', fingerprint),
      [fingerprint],
    );
    return row === undefined ? undefined : peerFromRow(row);
  }

  async findNetworkServers(netId: NetId): Promise<PeerRecord[]> {
    const rows = await this.#run('findNetworkServers', () =>
      this.db.selectFrom('peers').selectAll().where('kind', '=', 'ns').where('net_id', '=', netId).orderBy('id').execute(),
    );
    return rows.map(peerFromRow);
  }

  findApplicationServer(asId: string): Promise<PeerRecord | undefined> {
    return this.#peers.find(`as ${asId}`, () => this.readApplicationServer(asId));
  }

  /** The look-up behind findApplicationServer's kept answers. */
  protected async readApplicationServer(asId: string): Promise<PeerRecord | undefined> {
    const rows = await this.#query(
      'findApplicationServer',
      () => this.db.selectFrom('peers').selectAll().where('kind', '=', 'as').where('as_id', '=', asId),
      ['as', asId],
    );
    return firstApplicationServer(rows);
  }

  async listPeers(filter: { readonly organisation?: string } = {}): Promise<PeerRecord[]> {
    const rows = await this.#run('listPeers', () => {
      let q = this.db.selectFrom('peers').selectAll();
      if (filter.organisation !== undefined) q = q.where('organisation', '=', filter.organisation);
      return q.orderBy('id').execute();
    });
    return rows.map(peerFromRow);
  }

  // Sealed keys

  async insertKeyRecord(record: SealedKeyRecord): Promise<void> {
    await this.#run('insertKeyRecord', () => this.db.insertInto('key_records').values(keyRecordToRow(record)).execute(), [
      'KEY_RECORD_EXISTS',
      `key record ${record.handle} already exists`,
    ]);
  }

  async insertKeyRecords(records: readonly SealedKeyRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.#run(
      'insertKeyRecords',
      () =>
        this.db.transaction().execute(async (trx) => {
          for (let i = 0; i < records.length; i += KEY_RECORD_CHUNK) {
            const chunk = records.slice(i, i + KEY_RECORD_CHUNK);
            // Looked up first so that the error names the handles: SQLite's unique violation does not.
            const taken = await trx.selectFrom('key_records').select('handle').where('handle', 'in', chunk.map((r) => r.handle)).limit(3).execute();
            if (taken.length > 0) throw new StorageError('KEY_RECORD_EXISTS', `key record(s) already exist: ${taken.map((r) => r.handle).join(', ')}`);
            await trx.insertInto('key_records').values(chunk.map(keyRecordToRow)).execute();
          }
        }),
      ['KEY_RECORD_EXISTS', `a key record of the ${records.length} to insert already exists (or is named twice)`],
    );
  }

  async deleteKeyRecords(handles: readonly string[]): Promise<number> {
    if (handles.length === 0) return 0;
    return this.#run('deleteKeyRecords', () =>
      this.db.transaction().execute(async (trx) => {
        let deleted = 0;
        for (let i = 0; i < handles.length; i += KEY_RECORD_CHUNK) {
          const result = await trx.deleteFrom('key_records').where('handle', 'in', handles.slice(i, i + KEY_RECORD_CHUNK)).executeTakeFirst();
          deleted += Number(result.numDeletedRows);
        }
        return deleted;
      }),
    );
  }

  async getKeyRecord(handle: string): Promise<SealedKeyRecord | undefined> {
    const [row] = await this.#query('getKeyRecord', () => this.db.selectFrom('key_records').selectAll().where('handle', '=', handle), [handle]);
    return row === undefined ? undefined : keyRecordFromRow(row);
  }

  async listKeyRecords(): Promise<Omit<SealedKeyRecord, 'sealed'>[]> {
    const rows = await this.#run('listKeyRecords', () =>
      this.db.selectFrom('key_records').select(['handle', 'usage', 'created_at']).orderBy('handle').execute(),
    );
    return rows.map((r) => ({ handle: r.handle, usage: r.usage, createdAt: new Date(r.created_at) }));
  }

  async deleteKeyRecord(handle: string): Promise<boolean> {
    const result = await this.#run('deleteKeyRecord', () =>
      this.db.deleteFrom('key_records').where('handle', '=', handle).executeTakeFirst(),
    );
    return result.numDeletedRows > 0n;
  }

  // Audit trail

  async appendAudit(event: AuditEvent): Promise<void> {
    await this.#run('appendAudit', () => this.db.insertInto('audit_events').values(auditToRow(event)).execute());
  }

  /** Oldest first (append order), so a consumer can follow the trail with the `next` cursor. */
  async listAudit(
    options: ListOptions & { readonly subject?: string; readonly action?: string; readonly organisation?: string; readonly newestFirst?: boolean } = {},
  ): Promise<{ items: AuditEvent[]; next?: string }> {
    const limit = pageSize(options.limit);
    const after = options.after === undefined ? undefined : decodeAuditCursor(options.after);
    const newest = options.newestFirst === true;
    const rows = await this.#run('listAudit', () => {
      let query = this.db.selectFrom('audit_events').selectAll().orderBy('id', newest ? 'desc' : 'asc').limit(limit + 1);
      if (after !== undefined) query = query.where('id', newest ? '<' : '>', after);
      if (options.subject !== undefined) query = query.where('subject', '=', options.subject);
      if (options.action !== undefined) query = query.where('action', '=', options.action);
      if (options.organisation !== undefined) query = query.where('organisation', '=', options.organisation);
      return query.execute();
    });
    const page = rows.slice(0, limit).map(auditFromRow);
    const last = rows[limit - 1];
    return rows.length > limit && last !== undefined ? { items: page, next: encodeCursor('audit', last.id) } : { items: page };
  }

  // Personalization (personalization-store.ts)

  async insertMaker(maker: MakerRecord): Promise<void> {
    await this.#run('insertMaker', () => this.db.insertInto('makers').values(makerToRow(maker)).execute(), [
      'MAKER_EXISTS',
      `a maker named "${maker.name}", or one with the same signing key, is already registered`,
    ]);
  }

  async getMaker(name: string): Promise<MakerRecord | undefined> {
    const row = await this.#run('getMaker', () => this.db.selectFrom('makers').selectAll().where('name', '=', name).executeTakeFirst());
    return row === undefined ? undefined : makerFromRow(row);
  }

  async findMakerByKeyId(keyId: string): Promise<MakerRecord | undefined> {
    const row = await this.#run('findMakerByKeyId', () => this.db.selectFrom('makers').selectAll().where('key_id', '=', keyId).executeTakeFirst());
    return row === undefined ? undefined : makerFromRow(row);
  }

  async listMakers(): Promise<MakerRecord[]> {
    return (await this.#run('listMakers', () => this.db.selectFrom('makers').selectAll().orderBy('name').execute())).map(makerFromRow);
  }

  listBatches(options: ListOptions & { readonly makers?: readonly string[] } = {}): Promise<{ items: BatchRecord[]; next?: string }> {
    return this.#run('listBatches', () => personalization.listBatches(this.db, options));
  }

  getBatch(batchId: string): Promise<BatchRecord | undefined> {
    return this.#run('getBatch', () => personalization.getBatch(this.db, batchId));
  }

  findKnownDevEuis(devEuis: readonly Eui64[]): Promise<Eui64[]> {
    return this.#run('findKnownDevEuis', () => personalization.findKnownDevEuis(this.db, devEuis));
  }

  async importBatch(batch: BatchImport): Promise<void> {
    try {
      await this.db.transaction().execute((trx) => personalization.writeBatch(trx, batch));
    } catch (error) {
      if (error instanceof StorageError) throw error;
      if (this.dialect.classify(error) === 'unique-violation') {
        throw new StorageError('BATCH_EXISTS', `batch ${batch.batch.batchId}, or one of its devices, was imported concurrently`, { cause: error });
      }
      throw this.#fail(error, 'importBatch');
    }
  }

  getInventoryDevice(devEui: Eui64): Promise<InventoryDevice | undefined> {
    return this.#run('getInventoryDevice', () => personalization.getInventoryDevice(this.db, devEui));
  }

  async listInventory(options: ListOptions & { readonly maker?: string; readonly batchId?: string } = {}): Promise<{ items: InventoryDevice[]; next?: string }> {
    if (options.after !== undefined) decodeInventoryCursor(options.after); // a bad cursor is a RangeError, not a storage failure
    return this.#run('listInventory', () => personalization.listInventory(this.db, options));
  }

  async bindInventoryDevices(devEuis: readonly Eui64[], binding: DeviceBinding, audit: readonly AuditEvent[]): Promise<DeviceRecord[]> {
    const now = audit[0]?.at ?? new Date();
    try {
      return await this.#transact('bindInventoryDevices', (tx) => commissioning.bindInventory(tx, devEuis, binding, audit, now));
    } catch (error) {
      if (error instanceof StorageError && error.cause !== undefined && this.dialect.classify(error.cause) === 'unique-violation') {
        throw new StorageError('DEVICE_EXISTS', 'a device being bound exists already', { cause: error.cause });
      }
      throw error;
    }
  }

  async insertTransfer(transfer: TransferRecord): Promise<void> {
    await this.#run('insertTransfer', () => this.db.insertInto('transfers').values(personalization.transferToRow(transfer)).execute(), ['BATCH_EXISTS', `transfer ${transfer.batchId} exists already`]);
  }

  getTransfer(batchId: string): Promise<TransferRecord | undefined> {
    return this.#run('getTransfer', () => personalization.getTransfer(this.db, batchId));
  }

  async confirmTransfer(batchId: string, audit: readonly AuditEvent[], at: Date): Promise<string[]> {
    try {
      return await this.db.transaction().execute((trx) => personalization.confirmTransfer(trx, batchId, audit, at));
    } catch (error) {
      if (error instanceof StorageError) throw error;
      throw this.#fail(error, 'confirmTransfer');
    }
  }

  getDerivationKey(id: string): Promise<DerivationKeyRecord | undefined> {
    return this.#run('getDerivationKey', () => personalization.getDerivationKey(this.db, id));
  }

  // Commissioning (commissioning-store.ts)

  async insertOrganisation(o: OrganisationRecord): Promise<void> {
    await this.#run('insertOrganisation', () => this.db.insertInto('organisations').values(commissioning.organisationToRow(o)).execute(), [
      'ORGANISATION_EXISTS',
      `organisation ${o.id} already exists`,
    ]);
  }

  getOrganisation(id: string): Promise<OrganisationRecord | undefined> {
    return this.#run('getOrganisation', () => commissioning.getOrganisation(this.db, id));
  }

  listOrganisations(o: ListOptions = {}): Promise<{ items: OrganisationRecord[]; next?: string }> {
    return this.#run('listOrganisations', () => commissioning.listOrganisations(this.db, o), undefined, true);
  }

  updateOrganisation(o: OrganisationRecord): Promise<boolean> {
    return this.#run('updateOrganisation', () => commissioning.updateOrganisation(this.db, o));
  }

  async insertApiKey(k: ApiKeyRecord): Promise<void> {
    await this.#run('insertApiKey', () => this.db.insertInto('api_keys').values(commissioning.apiKeyToRow(k)).execute(), [
      'API_KEY_EXISTS',
      `an API key with id ${k.id}, or with the same secret, already exists`,
    ]);
  }

  getApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    return this.#run('getApiKey', () => commissioning.getApiKey(this.db, id));
  }

  listApiKeys(organisation: string | null): Promise<ApiKeyRecord[]> {
    return this.#run('listApiKeys', () => commissioning.listApiKeys(this.db, organisation));
  }

  revokeApiKey(id: string, at: Date): Promise<boolean> {
    return this.#run('revokeApiKey', () => commissioning.revokeApiKey(this.db, id, at));
  }

  async setMakerOrganisation(maker: string, organisation: string | null): Promise<boolean> {
    const result = await this.#run('setMakerOrganisation', () => this.db.updateTable('makers').set({ organisation }).where('name', '=', maker).executeTakeFirst());
    return result.numUpdatedRows > 0n;
  }

  async makerOrganisations(): Promise<Map<string, string>> {
    const rows = await this.#run('makerOrganisations', () =>
      this.db.selectFrom('makers').select(['name', 'organisation']).where('organisation', 'is not', null).orderBy('name').execute(),
    );
    return new Map(rows.map((r) => [r.name, r.organisation!]));
  }

  async setPeerOrganisation(peerId: string, organisation: string | null): Promise<boolean> {
    const result = await this.#changingPeers(() =>
      this.#run('setPeerOrganisation', () => this.db.updateTable('peers').set({ organisation }).where('id', '=', peerId).executeTakeFirst()),
    );
    return result.numUpdatedRows > 0n;
  }

  async peerOrganisation(peerId: string): Promise<string | null | undefined> {
    const row = await this.#run('peerOrganisation', () => this.db.selectFrom('peers').select('organisation').where('id', '=', peerId).executeTakeFirst());
    return row?.organisation;
  }

  findDevice(devEui: Eui64): Promise<FoundDevice | undefined> {
    return this.#run('findDevice', () => commissioning.findDevice(this.db, devEui));
  }

  listOwnedDevices(organisation: string | null, o: OwnedDeviceFilter = {}): Promise<{ items: FoundDevice[]; next?: string }> {
    return this.#run('listOwnedDevices', () => commissioning.listOwnedDevices(this.db, organisation, o), undefined, true);
  }

  claimDevice(devEui: Eui64, c: ClaimChange, audit: readonly AuditEvent[]): Promise<boolean> {
    return this.#transact('claimDevice', (tx) => commissioning.claimDevice(tx, devEui, c, audit));
  }

  bindOwnedDevices(owner: string | null, devEuis: readonly Eui64[], binding: OwnedBinding, at: Date, audit: readonly AuditEvent[]): Promise<DeviceRecord[]> {
    return this.#transact('bindOwnedDevices', (tx) => commissioning.bindOwnedDevices(tx, owner, devEuis, binding, at, audit));
  }

  unbindOwnedDevices(owner: string | null, devEuis: readonly Eui64[], audit: readonly AuditEvent[]): Promise<void> {
    return this.#transact('unbindOwnedDevices', (tx) => commissioning.unbindOwnedDevices(tx, owner, devEuis, audit));
  }

  unclaimOwnedDevices(owner: string | null, devEuis: readonly Eui64[], audit: readonly AuditEvent[]): Promise<void> {
    return this.#transact('unclaimOwnedDevices', (tx) => commissioning.unclaimOwnedDevices(tx, owner, devEuis, audit));
  }

  updateClaim(
    owner: string | null,
    devEui: Eui64,
    claim: { claimCodeHash: string | null; locked: boolean; expiresAt: Date | null },
    audit: readonly AuditEvent[],
  ): Promise<void> {
    return this.#transact('updateClaim', (tx) => commissioning.updateClaim(tx, owner, devEui, claim, audit));
  }

  resetDevNonces(devEui: Eui64, audit: readonly AuditEvent[]): Promise<boolean> {
    return this.#transact('resetDevNonces', (tx) => commissioning.resetDevNonces(tx, devEui, audit));
  }

  insertOwnershipTransfer(t: OwnershipTransferRecord, audit: readonly AuditEvent[]): Promise<void> {
    return this.#transact('insertOwnershipTransfer', (tx) => commissioning.insertOwnershipTransfer(tx, t, audit));
  }

  getOwnershipTransfer(id: string): Promise<OwnershipTransferRecord | undefined> {
    return this.#run('getOwnershipTransfer', () => commissioning.getOwnershipTransfer(this.db, id));
  }

  findOwnershipTransferByTokenSha256(tokenSha256: string): Promise<OwnershipTransferRecord | undefined> {
    return this.#run('findOwnershipTransferByTokenSha256', () => commissioning.findOwnershipTransferByTokenSha256(this.db, tokenSha256));
  }

  listOwnershipTransfers(organisation: string, o: ListOptions = {}): Promise<{ items: OwnershipTransferRecord[]; next?: string }> {
    return this.#run('listOwnershipTransfers', () => commissioning.listOwnershipTransfers(this.db, organisation, o), undefined, true);
  }

  acceptOwnershipTransfer(id: string, toOrg: string, at: Date, audit: readonly AuditEvent[]): Promise<void> {
    return this.#transact('acceptOwnershipTransfer', (tx) => commissioning.acceptOwnershipTransfer(tx, id, toOrg, at, audit));
  }

  cancelOwnershipTransfer(id: string, at: Date, audit: readonly AuditEvent[]): Promise<boolean> {
    return this.#transact('cancelOwnershipTransfer', (tx) => commissioning.cancelOwnershipTransfer(tx, id, at, audit));
  }

  /**
   * One transaction for one commissioning call: its checks, writes and audit events commit together; a StorageError
   * thrown inside (a refusal) rolls everything back and reaches the caller as is. Deadlocks and serialization failures
   * (PostgreSQL) and busy errors (SQLite) run the whole call again.
   */
  async #transact<T>(operation: string, run: (tx: commissioning.Tx) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.db.transaction().execute((trx) => run({ trx, lock: this.dialect.lockRows }));
      } catch (error) {
        if (error instanceof StorageError || error instanceof RangeError) throw error;
        if (this.dialect.classify(error) === 'retry' && attempt < this.dialect.maxAttempts) {
          await backoff(attempt);
          continue;
        }
        throw this.#fail(error, operation);
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.db.destroy();
  }

  /**
   * Runs one of the hot read statements (the join path's look-ups). Building and compiling a Kysely query costs more
   * CPU than running it on SQLite, so each is compiled once, by name, and later calls only bind `parameters`. The
   * first call checks that `parameters` are exactly the compiled query's, in order, so a mistake fails at once.
   */
  async #query<Row>(operation: string, build: () => Compilable<Row>, parameters: readonly unknown[]): Promise<Row[]> {
    let text = this.#compiled.get(operation);
    if (text === undefined) {
      const compiled = build().compile();
      if (compiled.parameters.length !== parameters.length || compiled.parameters.some((p, i) => p !== parameters[i])) {
        throw new Error(`${operation}: parameters ${JSON.stringify(parameters)} differ from the compiled query's`);
      }
      text = compiled.sql;
      this.#compiled.set(operation, text);
    }
    const sql = text;
    const result = await this.#run(operation, () => this.db.executeQuery<Row>(CompiledQuery.raw(sql, [...parameters])));
    return result.rows;
  }

  /** Runs one statement, mapping driver errors to StorageError (the driver error stays as `cause`). */
  async #run<T>(
    operation: string,
    query: () => Promise<T>,
    onUniqueViolation?: readonly [StorageErrorCode, string],
    /** A malformed cursor (RangeError) reaches the caller as is, not as a storage failure. */
    passRangeErrors = false,
  ): Promise<T> {
    try {
      return await query();
    } catch (error) {
      if (passRangeErrors && error instanceof RangeError) throw error;
      if (onUniqueViolation !== undefined && this.dialect.classify(error) === 'unique-violation') {
        throw new StorageError(onUniqueViolation[0], onUniqueViolation[1], { cause: error });
      }
      throw this.#fail(error, operation);
    }
  }

  #fail(error: unknown, operation: string): StorageError {
    return storageFailure(this.kind, error, operation);
  }
}

/**
 * writeDecision in one PostgreSQL statement (data-modifying CTEs): each statement is a network round trip, and five
 * of them were most of a join's time in the database. All parts of one statement see the same snapshot, so the
 * pruning cannot see the session inserted beside it: it keeps the `sessionLimit - 1` most recent older sessions,
 * which with the new one makes `sessionLimit`, as writeDecision does.
 */
async function writeDecisionPostgres(
  trx: Transaction<Database>,
  devEui: Eui64,
  joinEui: Eui64,
  decision: Extract<JoinDecision<unknown>, { commit: JoinState }>,
  sessionLimit: number,
): Promise<void> {
  const { commit, session, audit } = decision;
  const state = joinStateToRow(devEui, joinEui, commit, session.createdAt.getTime());
  const n = sessionToRow(session);
  const a = audit === undefined ? undefined : auditToRow(audit);
  await sql`
    with nonce as (update devices set last_join_nonce = ${commit.lastJoinNonce} where dev_eui = ${devEui}),
    state as (
      insert into device_join_state (dev_eui, join_eui, last_dev_nonce, used_dev_nonces, last_rj_count1, updated_at)
      values (${state.dev_eui}, ${state.join_eui}, ${state.last_dev_nonce}, ${state.used_dev_nonces}, ${state.last_rj_count1}, ${state.updated_at})
      on conflict (dev_eui, join_eui) do update set last_dev_nonce = excluded.last_dev_nonce,
        used_dev_nonces = excluded.used_dev_nonces, last_rj_count1 = excluded.last_rj_count1, updated_at = excluded.updated_at),
    session as (
      insert into sessions (dev_eui, session_key_id, join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at)
      values (${n.dev_eui}, ${n.session_key_id}, ${n.join_eui}, ${n.scheme}, ${n.join_nonce}, ${n.dev_nonce}, ${n.net_id}, ${n.dev_addr}, ${n.created_at})),
    pruned as (
      delete from sessions where dev_eui = ${devEui}
        and seq not in (select seq from sessions where dev_eui = ${devEui} order by seq desc limit ${sessionLimit - 1}))
    ${
      a === undefined
        ? sql`select 1`
        : sql`insert into audit_events (at, actor, action, subject, outcome, details, organisation)
              values (${a.at}, ${a.actor}, ${a.action}, ${a.subject}, ${a.outcome}, ${a.details}, ${a.organisation ?? null})`
    }`.execute(trx);
}

/**
 * Guards the nonce invariants even if the caller's decision is wrong: a JoinNonce is never issued twice.
 * Returns the broken invariant as a RangeError (the caller rolls back and throws it), or undefined.
 */
export function checkDecision(devEui: Eui64, joinEui: Eui64, current: JoinState, commit: JoinState, session: SessionRecord): RangeError | undefined {
  const broken = (why: string): RangeError => new RangeError(`reserveJoin for ${devEui}: ${why}`);
  if (!Number.isSafeInteger(commit.lastJoinNonce) || commit.lastJoinNonce <= current.lastJoinNonce) {
    return broken(`JoinNonce must increase (stored ${current.lastJoinNonce}, committed ${commit.lastJoinNonce})`);
  }
  if (commit.lastJoinNonce > MAX_JOIN_NONCE) return broken(`JoinNonce ${commit.lastJoinNonce} exceeds 24 bits`);
  if (session.joinNonce !== commit.lastJoinNonce) {
    return broken(`session JoinNonce ${session.joinNonce} differs from committed JoinNonce ${commit.lastJoinNonce}`);
  }
  if (session.devEui !== devEui || session.joinEui !== joinEui) {
    return broken(`session is for ${session.devEui}/${session.joinEui}, not ${devEui}/${joinEui}`);
  }
  return undefined;
}

/** sessionLimit of reserveJoin: a positive integer. */
export function checkSessionLimit(sessionLimit: number): void {
  if (!Number.isSafeInteger(sessionLimit) || sessionLimit < 1) {
    throw new RangeError(`sessionLimit must be a positive integer, got ${sessionLimit}`);
  }
}

/** A driver error as the StorageError the contract promises (the driver error stays as `cause`). */
export function storageFailure(kind: 'sqlite' | 'postgres', error: unknown, operation: string): StorageError {
  if (error instanceof StorageError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new StorageError('UNAVAILABLE', `${kind} storage: ${operation} failed: ${detail}`, { cause: error });
}

export function backoff(attempt: number): Promise<void> {
  const ms = Math.min(200, 10 * 2 ** attempt) * (0.5 + Math.random() / 2);
  return new Promise((resolve) => setTimeout(resolve, ms));
}
