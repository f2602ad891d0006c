import type { Insertable, Kysely, Selectable } from 'kysely';
import type { Eui64, MacVersion } from '../protocol/index.js';
import { decodeBatchCursor, decodeInventoryCursor, encodeCursor, pageSize } from './cursor.js';
import { StorageError } from './errors.js';
import { auditToRow, claimHashColumn } from './records.js';
import type { BatchesTable, Database, DerivationKeysTable, DeviceInventoryTable, MakersTable } from './schema.js';
import type { AuditEvent, TransferRecord, BatchImport, BatchRecord, DerivationKeyRecord, InventoryDevice, ListOptions, MakerRecord } from './storage.js';

/*
 * Makers, batches, derivation keys and the device inventory (docs/specs/sealed-batch.md), the same on SQLite and
 * PostgreSQL. A batch of 100,000 devices is written with multi-row inserts in chunks, in one transaction.
 */

/** Rows per multi-row INSERT: below SQLite's 32,766 bound parameters for the widest table (11 columns). */
const CHUNK = 500;

export const makerToRow = (m: MakerRecord): Insertable<MakersTable> => ({
  name: m.name,
  kind: m.kind,
  key_id: m.keyId,
  public_jwk: JSON.stringify(m.publicJwk),
  created_at: m.createdAt.getTime(),
});

export const makerFromRow = (r: Selectable<MakersTable>): MakerRecord => ({
  name: r.name,
  kind: r.kind as MakerRecord['kind'],
  keyId: r.key_id,
  publicJwk: JSON.parse(r.public_jwk) as Record<string, unknown>,
  createdAt: new Date(r.created_at),
});

const batchToRow = (b: BatchRecord): BatchesTable => ({
  batch_id: b.batchId,
  maker: b.maker,
  kind: b.kind,
  payload_sha256: b.payloadSha256,
  device_count: b.deviceCount,
  created_at: b.createdAt.getTime(),
  imported_at: b.importedAt.getTime(),
});

const batchFromRow = (r: Selectable<BatchesTable>): BatchRecord => ({
  batchId: r.batch_id,
  maker: r.maker,
  kind: r.kind as BatchRecord['kind'],
  payloadSha256: r.payload_sha256,
  deviceCount: r.device_count,
  createdAt: new Date(r.created_at),
  importedAt: new Date(r.imported_at),
});

/** A maker's stock: owner null (unclaimed), nothing carried beyond the transfer's JoinNonce and last DevNonce. */
const inventoryToRow = (d: InventoryDevice): Insertable<DeviceInventoryTable> => ({
  dev_eui: d.devEui,
  join_eui: d.joinEui,
  mac_version: d.macVersion,
  app_key_handle: d.appKeyHandle,
  nwk_key_handle: d.nwkKeyHandle,
  maker: d.maker,
  batch_id: d.batchId,
  profile: d.profile,
  serial_number: d.serialNumber,
  claim_code_hash: claimHashColumn(d.claimCodeHash),
  last_join_nonce: d.lastJoinNonce,
  last_dev_nonce: d.lastDevNonce,
  created_at: d.createdAt.getTime(),
});

export const inventoryFromRow = (r: Selectable<DeviceInventoryTable>): InventoryDevice => ({
  devEui: r.dev_eui as Eui64,
  joinEui: r.join_eui as Eui64,
  macVersion: r.mac_version as MacVersion,
  appKeyHandle: r.app_key_handle,
  nwkKeyHandle: r.nwk_key_handle,
  maker: r.maker,
  batchId: r.batch_id,
  profile: r.profile,
  serialNumber: r.serial_number,
  claimCodeHash: r.claim_code_hash,
  lastJoinNonce: r.last_join_nonce,
  lastDevNonce: r.last_dev_nonce,
  createdAt: new Date(r.created_at),
});

const derivationToRow = (k: DerivationKeyRecord): DerivationKeysTable => ({
  id: k.id,
  maker: k.maker,
  key_handle: k.keyHandle,
  batch_id: k.batchId,
  created_at: k.createdAt.getTime(),
});

const derivationFromRow = (r: Selectable<DerivationKeysTable>): DerivationKeyRecord => ({
  id: r.id,
  maker: r.maker,
  keyHandle: r.key_handle,
  batchId: r.batch_id,
  createdAt: new Date(r.created_at),
});

export function* chunks<T>(items: readonly T[], size = CHUNK): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

export async function findKnownDevEuis(db: Kysely<Database>, devEuis: readonly Eui64[]): Promise<Eui64[]> {
  const known: Eui64[] = [];
  for (const part of chunks(devEuis)) {
    const devices = await db.selectFrom('devices').select('dev_eui').where('dev_eui', 'in', part).execute();
    const inventory = await db.selectFrom('device_inventory').select('dev_eui').where('dev_eui', 'in', part).execute();
    for (const r of [...devices, ...inventory]) known.push(r.dev_eui as Eui64);
  }
  return known.sort();
}

/**
 * The batch's rows in one transaction (the caller's: SQLite's begins IMMEDIATE, so the checks and the writes see
 * one state). The known-DevEUI check runs again inside it: another import may have won the race since the caller
 * checked.
 */
export async function writeBatch(trx: Kysely<Database>, b: BatchImport): Promise<void> {
  if ((await trx.selectFrom('batches').select('batch_id').where('batch_id', '=', b.batch.batchId).executeTakeFirst()) !== undefined) {
    throw new StorageError('BATCH_EXISTS', `batch ${b.batch.batchId} was imported before`);
  }
  const known = await findKnownDevEuis(trx, b.inventory.map((d) => d.devEui));
  if (known.length > 0) throw new StorageError('DEVICE_EXISTS', `${known.length} device(s) of batch ${b.batch.batchId} already exist: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', …' : ''}`);
  await trx.insertInto('batches').values(batchToRow(b.batch)).execute();
  if (b.derivationKey !== undefined) await trx.insertInto('derivation_keys').values(derivationToRow(b.derivationKey)).execute();
  for (const part of chunks(b.inventory)) await trx.insertInto('device_inventory').values(part.map(inventoryToRow)).execute();
  for (const part of chunks(b.audit)) await trx.insertInto('audit_events').values(part.map(auditToRow)).execute();
}

export async function getBatch(db: Kysely<Database>, batchId: string): Promise<BatchRecord | undefined> {
  const row = await db.selectFrom('batches').selectAll().where('batch_id', '=', batchId).executeTakeFirst();
  return row === undefined ? undefined : batchFromRow(row);
}

export async function listBatches(db: Kysely<Database>, options: ListOptions & { readonly makers?: readonly string[] }): Promise<{ items: BatchRecord[]; next?: string }> {
  if (options.makers !== undefined && options.makers.length === 0) return { items: [] };
  const limit = pageSize(options.limit);
  const after = options.after === undefined ? undefined : decodeBatchCursor(options.after);
  let query = db.selectFrom('batches').selectAll().orderBy('batch_id').limit(limit + 1);
  if (after !== undefined) query = query.where('batch_id', '>', after);
  if (options.makers !== undefined) query = query.where('maker', 'in', [...options.makers]);
  const rows = await query.execute();
  const page = rows.slice(0, limit).map(batchFromRow);
  const last = page.at(-1);
  return rows.length > limit && last !== undefined ? { items: page, next: encodeCursor('batch', last.batchId) } : { items: page };
}

export async function getInventoryDevice(db: Kysely<Database>, devEui: Eui64): Promise<InventoryDevice | undefined> {
  const row = await db.selectFrom('device_inventory').selectAll().where('dev_eui', '=', devEui).executeTakeFirst();
  return row === undefined ? undefined : inventoryFromRow(row);
}

export async function listInventory(
  db: Kysely<Database>,
  options: ListOptions & { readonly maker?: string; readonly batchId?: string },
): Promise<{ items: InventoryDevice[]; next?: string }> {
  const limit = pageSize(options.limit);
  const after = options.after === undefined ? undefined : decodeInventoryCursor(options.after);
  let query = db.selectFrom('device_inventory').selectAll().orderBy('dev_eui').limit(limit + 1);
  if (after !== undefined) query = query.where('dev_eui', '>', after);
  if (options.maker !== undefined) query = query.where('maker', '=', options.maker);
  if (options.batchId !== undefined) query = query.where('batch_id', '=', options.batchId);
  const rows = await query.execute();
  const page = rows.slice(0, limit).map(inventoryFromRow);
  const last = page.at(-1);
  return rows.length > limit && last !== undefined ? { items: page, next: encodeCursor('inventory', last.devEui) } : { items: page };
}

export async function getDerivationKey(db: Kysely<Database>, id: string): Promise<DerivationKeyRecord | undefined> {
  const row = await db.selectFrom('derivation_keys').selectAll().where('id', '=', id).executeTakeFirst();
  return row === undefined ? undefined : derivationFromRow(row);
}

export const transferToRow = (t: TransferRecord) => ({
  batch_id: t.batchId,
  recipient: t.recipient,
  dev_euis: JSON.stringify(t.devEuis),
  state: t.state,
  created_at: t.createdAt.getTime(),
  confirmed_at: t.confirmedAt === null ? null : t.confirmedAt.getTime(),
});

export async function getTransfer(db: Kysely<Database>, batchId: string): Promise<TransferRecord | undefined> {
  const r = await db.selectFrom('transfers').selectAll().where('batch_id', '=', batchId).executeTakeFirst();
  if (r === undefined) return undefined;
  return {
    batchId: r.batch_id,
    recipient: r.recipient,
    devEuis: JSON.parse(r.dev_euis) as Eui64[],
    state: r.state,
    createdAt: new Date(r.created_at),
    confirmedAt: r.confirmed_at === null ? null : new Date(r.confirmed_at),
  };
}

/** In the caller's transaction. */
export async function confirmTransfer(trx: Kysely<Database>, batchId: string, audit: readonly AuditEvent[], at: Date): Promise<string[]> {
  const t = await getTransfer(trx, batchId);
  if (t === undefined) throw new StorageError('DEVICE_NOT_FOUND', `no transfer ${batchId}`);
  if (t.state !== 'pending') throw new StorageError('BATCH_EXISTS', `transfer ${batchId} was confirmed on ${t.confirmedAt?.toISOString()}`);
  const handles: string[] = [];
  for (const part of chunks(t.devEuis)) {
    const devices = await trx.selectFrom('devices').select(['app_key_handle', 'nwk_key_handle']).where('dev_eui', 'in', part).execute();
    const inventory = await trx.selectFrom('device_inventory').select(['app_key_handle', 'nwk_key_handle']).where('dev_eui', 'in', part).execute();
    for (const r of [...devices, ...inventory]) handles.push(r.app_key_handle, ...(r.nwk_key_handle === null ? [] : [r.nwk_key_handle]));
    await trx.deleteFrom('devices').where('dev_eui', 'in', part).execute();
    await trx.deleteFrom('device_inventory').where('dev_eui', 'in', part).execute();
  }
  await trx.updateTable('transfers').set({ state: 'confirmed', confirmed_at: at.getTime() }).where('batch_id', '=', batchId).execute();
  for (const part of chunks(audit)) await trx.insertInto('audit_events').values(part.map(auditToRow)).execute();
  return handles;
}
