import { type Expression, type Insertable, type Kysely, type Selectable, type SqlBool, sql } from 'kysely';
import type { Eui64, NetId } from '../protocol/index.js';
import { decodeOrganisationCursor, decodeOwnedCursor, decodeOwnershipTransferCursor, encodeCursor, pageSize } from './cursor.js';
import { StorageError } from './errors.js';
import { chunks, inventoryFromRow } from './personalization-store.js';
import { auditToRow, claimHashColumn, deviceFromRow, deviceToRow } from './records.js';
import type { ApiKeysTable, Database, DeviceInventoryTable, DevicesTable, OrganisationsTable, OwnershipTransfersTable } from './schema.js';
import type {
  ApiKeyRecord,
  AuditEvent,
  ClaimChange,
  DeviceBinding,
  DeviceCommissioning,
  DeviceRecord,
  FoundDevice,
  ListOptions,
  OrganisationRecord,
  OrganisationRole,
  OwnedDeviceFilter,
  OwnershipTransferRecord,
} from './storage.js';

/*
 * Commissioning (docs/commissioning.md, docs/storage.md "Bound and unbound devices"), the same on SQLite and
 * PostgreSQL. A device is in exactly one of two tables: `device_inventory` (unbound, not activatable) or `devices`
 * (bound). A move between them carries the device's JoinNonce counter and the join state of its own JoinEUI
 * (last DevNonce, used DevNonces, last RJcount1), so a JoinNonce is never issued twice and a DevNonce used before is
 * refused after any bind/unbind/claim/transfer cycle; a move out of `devices` deletes the device's sessions, so no
 * AppSKeyReq for a session of the previous binding succeeds.
 *
 * Every mutating function runs in the caller's transaction (one per contract call, audit events included) and checks
 * everything before it writes anything: a refusal throws a StorageError and the caller rolls back.
 */

type Db = Kysely<Database>;
type DeviceRow = Selectable<DevicesTable>;
type InventoryRow = Selectable<DeviceInventoryTable>;
type Row = DeviceRow | InventoryRow;

/**
 * A transaction, and whether rows must be locked explicitly: PostgreSQL `SELECT … FOR UPDATE`, so two concurrent
 * claims or acceptances of the same devices are serialised and the second sees the first's result. SQLite's
 * transactions begin IMMEDIATE and already hold the database's write lock.
 */
export interface Tx {
  readonly trx: Db;
  readonly lock: boolean;
}

const ms = (d: Date | null): number | null => (d === null ? null : d.getTime());
const date = (n: number | null): Date | null => (n === null ? null : new Date(n));
const notOwned = (devEui: string, owner: string | null, why = 'is not a device of'): StorageError =>
  new StorageError('NOT_OWNED', `device ${devEui} ${why} ${owner ?? 'the operator'}`);
/** `owner` null is the installation operator: every device is its. */
const owns = (owner: string | null, row: Row): boolean => owner === null || row.owner === owner;

async function writeAudit(trx: Db, audit: readonly AuditEvent[]): Promise<void> {
  for (const part of chunks(audit)) await trx.insertInto('audit_events').values(part.map(auditToRow)).execute();
}

// ---- Organisations and API keys ----

export const organisationToRow = (o: OrganisationRecord): OrganisationsTable => ({
  id: o.id,
  name: o.name,
  roles: JSON.stringify(o.roles),
  net_ids: JSON.stringify(o.netIds),
  ns_ids: JSON.stringify(o.nsIds),
  as_ids: JSON.stringify(o.asIds),
  created_at: o.createdAt.getTime(),
});

const organisationFromRow = (r: Selectable<OrganisationsTable>): OrganisationRecord => ({
  id: r.id,
  name: r.name,
  roles: JSON.parse(r.roles) as OrganisationRole[],
  netIds: JSON.parse(r.net_ids) as NetId[],
  nsIds: JSON.parse(r.ns_ids) as Eui64[],
  asIds: JSON.parse(r.as_ids) as string[],
  createdAt: new Date(r.created_at),
});

export async function getOrganisation(db: Db, id: string): Promise<OrganisationRecord | undefined> {
  const row = await db.selectFrom('organisations').selectAll().where('id', '=', id).executeTakeFirst();
  return row === undefined ? undefined : organisationFromRow(row);
}

/** In id order. */
export async function listOrganisations(db: Db, o: ListOptions): Promise<{ items: OrganisationRecord[]; next?: string }> {
  const limit = pageSize(o.limit);
  const after = o.after === undefined ? undefined : decodeOrganisationCursor(o.after);
  const rows = await db
    .selectFrom('organisations')
    .selectAll()
    .$if(after !== undefined, (q) => q.where('id', '>', after!))
    .orderBy('id')
    .limit(limit + 1)
    .execute();
  const page = rows.slice(0, limit).map(organisationFromRow);
  const last = page.at(-1);
  return rows.length > limit && last !== undefined ? { items: page, next: encodeCursor('organisation', last.id) } : { items: page };
}

/** Everything but the id and the creation time. */
export async function updateOrganisation(db: Db, o: OrganisationRecord): Promise<boolean> {
  const { id: _id, created_at: _createdAt, ...changes } = organisationToRow(o);
  const result = await db.updateTable('organisations').set(changes).where('id', '=', o.id).executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

export const apiKeyToRow = (k: ApiKeyRecord): ApiKeysTable => ({
  id: k.id,
  organisation: k.organisation,
  name: k.name,
  secret_sha256: k.secretSha256,
  scopes: JSON.stringify(k.scopes),
  created_at: k.createdAt.getTime(),
  expires_at: ms(k.expiresAt),
  revoked_at: ms(k.revokedAt),
});

const apiKeyFromRow = (r: Selectable<ApiKeysTable>): ApiKeyRecord => ({
  id: r.id,
  organisation: r.organisation,
  name: r.name,
  secretSha256: r.secret_sha256,
  scopes: JSON.parse(r.scopes) as string[],
  createdAt: new Date(r.created_at),
  expiresAt: date(r.expires_at),
  revokedAt: date(r.revoked_at),
});

export async function getApiKey(db: Db, id: string): Promise<ApiKeyRecord | undefined> {
  const row = await db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirst();
  return row === undefined ? undefined : apiKeyFromRow(row);
}

/** Oldest first. */
export async function listApiKeys(db: Db, organisation: string | null): Promise<ApiKeyRecord[]> {
  const rows = await db
    .selectFrom('api_keys')
    .selectAll()
    .where('organisation', organisation === null ? 'is' : '=', organisation)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map(apiKeyFromRow);
}

/** Keeps the first revocation's instant: revoking twice is not an error, and does not move the date. */
export async function revokeApiKey(db: Db, id: string, at: Date): Promise<boolean> {
  const result = await db
    .updateTable('api_keys')
    .set((eb) => ({ revoked_at: eb.fn.coalesce('revoked_at', eb.val(at.getTime())) }))
    .where('id', '=', id)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

// ---- Devices: reading ----

const commissioningOf = (r: Row): DeviceCommissioning => ({
  owner: r.owner,
  maker: r.maker,
  batchId: r.batch_id,
  profile: r.profile,
  serialNumber: r.serial_number,
  claimCodeHash: r.claim_code_hash,
  claimLocked: r.claim_locked === 1,
  claimExpiresAt: date(r.claim_expires_at),
  claimedAt: date(r.claimed_at),
});

const foundBound = (r: DeviceRow): FoundDevice => ({ bound: true, device: deviceFromRow(r), commissioning: commissioningOf(r), boundAt: date(r.bound_at) });
const foundUnbound = (r: InventoryRow): FoundDevice => ({ bound: false, device: inventoryFromRow(r), commissioning: commissioningOf(r) });

export async function findDevice(db: Db, devEui: Eui64): Promise<FoundDevice | undefined> {
  const bound = () => db.selectFrom('devices').selectAll().where('dev_eui', '=', devEui).executeTakeFirst();
  const first = await bound();
  if (first !== undefined) return foundBound(first);
  const unbound = await db.selectFrom('device_inventory').selectAll().where('dev_eui', '=', devEui).executeTakeFirst();
  if (unbound !== undefined) return foundUnbound(unbound);
  // Bound between the two reads (inventory → devices): read again rather than answer "unknown" for a known device.
  const again = await bound();
  return again === undefined ? undefined : foundBound(again);
}

/**
 * Both tables, each read in DevEUI order from the cursor on with the filters and the visibility rule, merged: at most
 * `limit + 1` rows from each suffice for one page of the union.
 */
/** The filters devices and device_inventory share (same column names), as one condition for either table. */
function deviceFilters(o: OwnedDeviceFilter, after: string | undefined): Expression<SqlBool> {
  const conditions = [
    ...(after === undefined ? [] : [sql<SqlBool>`dev_eui > ${after}`]),
    ...(o.joinEui === undefined ? [] : [sql<SqlBool>`join_eui = ${o.joinEui}`]),
    ...(o.macVersion === undefined ? [] : [sql<SqlBool>`mac_version = ${o.macVersion}`]),
    ...(o.batchId === undefined ? [] : [sql<SqlBool>`batch_id = ${o.batchId}`]),
  ];
  return conditions.length === 0 ? sql<SqlBool>`1 = 1` : sql<SqlBool>`${sql.join(conditions, sql` and `)}`;
}

export async function listOwnedDevices(db: Db, organisation: string | null, o: OwnedDeviceFilter): Promise<{ items: FoundDevice[]; next?: string }> {
  const limit = pageSize(o.limit);
  const after = o.after === undefined ? undefined : decodeOwnedCursor(o.after);
  const bound =
    o.bound === false
      ? []
      : await db
          .selectFrom('devices')
          .selectAll()
          .$if(organisation !== null, (q) => q.where('owner', '=', organisation))
          .where(() => deviceFilters(o, after))
          .orderBy('dev_eui')
          .limit(limit + 1)
          .execute();
  const unbound =
    o.bound === true
      ? []
      : await db
          .selectFrom('device_inventory')
          .selectAll()
          // Its own devices, and the unclaimed stock of its makers.
          .$if(organisation !== null, (q) =>
            q.where((eb) =>
              eb.or([
                eb('owner', '=', organisation),
                eb.and([eb('owner', 'is', null), eb('maker', 'in', eb.selectFrom('makers').select('name').where('organisation', '=', organisation))]),
              ]),
            ),
          )
          .where(() => deviceFilters(o, after))
          .orderBy('dev_eui')
          .limit(limit + 1)
          .execute();
  const merged = [...bound.map(foundBound), ...unbound.map(foundUnbound)].sort((a, b) => (a.device.devEui < b.device.devEui ? -1 : a.device.devEui > b.device.devEui ? 1 : 0));
  const page = merged.slice(0, limit);
  const last = page.at(-1);
  return merged.length > limit && last !== undefined ? { items: page, next: encodeCursor('owned', last.device.devEui) } : { items: page };
}

// ---- Devices: moving between the tables ----

/** Reads (and on PostgreSQL locks, in DevEUI order) the devices named, wherever they are. */
async function lockDevices(tx: Tx, devEuis: readonly string[]): Promise<{ bound: Map<string, DeviceRow>; unbound: Map<string, InventoryRow> }> {
  const bound = new Map<string, DeviceRow>();
  const unbound = new Map<string, InventoryRow>();
  for (const part of chunks([...devEuis].sort())) {
    const d = await tx.trx.selectFrom('devices').selectAll().where('dev_eui', 'in', part).orderBy('dev_eui').$if(tx.lock, (q) => q.forUpdate()).execute();
    for (const r of d) bound.set(r.dev_eui, r);
    const i = await tx.trx.selectFrom('device_inventory').selectAll().where('dev_eui', 'in', part).orderBy('dev_eui').$if(tx.lock, (q) => q.forUpdate()).execute();
    for (const r of i) unbound.set(r.dev_eui, r);
  }
  return { bound, unbound };
}

type ClaimColumns = Partial<Pick<InventoryRow, 'owner' | 'claim_code_hash' | 'claim_locked' | 'claim_expires_at' | 'claimed_at'>>;

/**
 * devices → device_inventory. The join state is read after the rows were locked (lockDevices), in its own statement:
 * on PostgreSQL a statement started after the lock sees what a concurrent reserveJoin committed. Only the state of the
 * device's own JoinEUI is kept (the inventory has one); the sessions are deleted.
 */
async function moveToInventory(trx: Db, rows: readonly DeviceRow[], change: ClaimColumns): Promise<void> {
  for (const part of chunks(rows)) {
    const orphan = part.find((r) => r.maker === null || r.batch_id === null);
    if (orphan !== undefined) {
      throw new StorageError('NOT_OWNED', `device ${orphan.dev_eui} was added by the operator, not imported from a batch: it has no inventory to return to`);
    }
    const euis = part.map((r) => r.dev_eui);
    const joinEuis = new Map(part.map((r) => [r.dev_eui, r.join_eui]));
    const states = await trx.selectFrom('device_join_state').selectAll().where('dev_eui', 'in', euis).execute();
    const own = new Map(states.filter((s) => s.join_eui === joinEuis.get(s.dev_eui)).map((s) => [s.dev_eui, s]));
    await trx.deleteFrom('sessions').where('dev_eui', 'in', euis).execute();
    await trx.deleteFrom('device_join_state').where('dev_eui', 'in', euis).execute();
    await trx.deleteFrom('devices').where('dev_eui', 'in', euis).execute();
    await trx
      .insertInto('device_inventory')
      .values(
        part.map((r): Insertable<DeviceInventoryTable> => {
          const s = own.get(r.dev_eui);
          return {
            dev_eui: r.dev_eui,
            join_eui: r.join_eui,
            mac_version: r.mac_version,
            app_key_handle: r.app_key_handle,
            nwk_key_handle: r.nwk_key_handle,
            maker: r.maker!,
            batch_id: r.batch_id!,
            profile: r.profile,
            serial_number: r.serial_number,
            claim_code_hash: r.claim_code_hash,
            // JoinNonce is never reset (LoRaWAN 1.1 §6.2.3: the device accepts only a JoinNonce above the last).
            last_join_nonce: r.last_join_nonce,
            last_dev_nonce: s?.last_dev_nonce ?? null,
            used_dev_nonces: s?.used_dev_nonces ?? null,
            last_rj_count1: s?.last_rj_count1 ?? null,
            created_at: r.created_at,
            owner: r.owner,
            claim_locked: r.claim_locked,
            claim_expires_at: r.claim_expires_at,
            claimed_at: r.claimed_at,
            ...change,
          };
        }),
      )
      .execute();
  }
}

type Binding = DeviceBinding & { readonly nsKekLabel?: string | null; readonly asKekLabel?: string | null };

/** device_inventory → devices, with the binding and the join state the inventory row carried. */
async function moveToDevices(trx: Db, rows: readonly InventoryRow[], binding: Binding, at: number, createdAt: number | 'keep'): Promise<DeviceRecord[]> {
  const moved: DeviceRecord[] = [];
  for (const part of chunks(rows)) {
    const devices = part.map(
      (r): DeviceRecord => ({
        devEui: r.dev_eui as Eui64,
        joinEui: r.join_eui as Eui64,
        macVersion: r.mac_version as DeviceRecord['macVersion'],
        appKeyHandle: r.app_key_handle,
        nwkKeyHandle: r.nwk_key_handle,
        homeNetId: binding.homeNetId,
        homeNsId: binding.homeNsId,
        asId: binding.asId,
        roamingNetIds: binding.roamingNetIds,
        nsKekLabel: binding.nsKekLabel ?? null,
        asKekLabel: binding.asKekLabel ?? null,
        createdAt: new Date(createdAt === 'keep' ? r.created_at : createdAt),
      }),
    );
    await trx
      .insertInto('devices')
      .values(
        part.map((r, i) => ({
          ...deviceToRow(devices[i]!),
          last_join_nonce: r.last_join_nonce,
          owner: r.owner,
          maker: r.maker,
          batch_id: r.batch_id,
          profile: r.profile,
          serial_number: r.serial_number,
          claim_code_hash: r.claim_code_hash,
          claim_locked: r.claim_locked,
          claim_expires_at: r.claim_expires_at,
          claimed_at: r.claimed_at,
          bound_at: at,
        })),
      )
      .execute();
    const states = part.filter((r) => r.last_dev_nonce !== null || r.last_rj_count1 !== null || (r.used_dev_nonces !== null && r.used_dev_nonces !== '[]'));
    if (states.length > 0) {
      await trx
        .insertInto('device_join_state')
        .values(
          states.map((r) => ({
            dev_eui: r.dev_eui,
            join_eui: r.join_eui,
            last_dev_nonce: r.last_dev_nonce,
            used_dev_nonces: r.used_dev_nonces ?? '[]',
            last_rj_count1: r.last_rj_count1,
            updated_at: at,
          })),
        )
        .execute();
    }
    await trx.deleteFrom('device_inventory').where('dev_eui', 'in', part.map((r) => r.dev_eui)).execute();
    moved.push(...devices);
  }
  return moved;
}

/** The operator's `device bind`: every DevEUI must be in the inventory (any owner); all move, or none. */
export async function bindInventory(tx: Tx, devEuis: readonly Eui64[], binding: DeviceBinding, audit: readonly AuditEvent[], now: Date): Promise<DeviceRecord[]> {
  const { unbound } = await lockDevices(tx, devEuis);
  const missing = devEuis.find((d) => !unbound.has(d));
  if (missing !== undefined) throw new StorageError('DEVICE_NOT_FOUND', `device ${missing} is not in the inventory (unknown, or bound already)`);
  const rows = [...new Set(devEuis)].map((d) => unbound.get(d)!);
  const bound = await moveToDevices(tx.trx, rows, binding, now.getTime(), now.getTime());
  await writeAudit(tx.trx, audit);
  return bound;
}

/** Claims: compare-and-set on the owner the caller read. */
export async function claimDevice(tx: Tx, devEui: Eui64, c: ClaimChange, audit: readonly AuditEvent[]): Promise<boolean> {
  const { bound, unbound } = await lockDevices(tx, [devEui]);
  const d = bound.get(devEui);
  const current = d ?? unbound.get(devEui);
  if (current === undefined || current.owner !== c.expectOwner) return false;
  const claim = {
    owner: c.owner,
    claim_code_hash: claimHashColumn(c.claimCodeHash),
    claim_locked: c.locked ? 1 : 0,
    claim_expires_at: ms(c.expiresAt),
    claimed_at: c.at.getTime(),
  };
  if (d !== undefined && d.owner !== c.owner) {
    // Bound to someone else's network: unbound, its sessions gone.
    await moveToInventory(tx.trx, [d], claim);
  } else if (d !== undefined) {
    await tx.trx.updateTable('devices').set(claim).where('dev_eui', '=', devEui).execute();
  } else {
    await tx.trx.updateTable('device_inventory').set(claim).where('dev_eui', '=', devEui).execute();
  }
  await writeAudit(tx.trx, audit);
  return true;
}

export async function bindOwnedDevices(
  tx: Tx,
  owner: string | null,
  devEuis: readonly Eui64[],
  binding: Binding,
  at: Date,
  audit: readonly AuditEvent[],
): Promise<DeviceRecord[]> {
  const unique = [...new Set(devEuis)];
  const { bound, unbound } = await lockDevices(tx, unique);
  for (const devEui of unique) {
    const row = bound.get(devEui) ?? unbound.get(devEui);
    if (row === undefined || !owns(owner, row)) throw notOwned(devEui, owner);
  }
  const rebinding = unique.filter((d) => bound.has(d));
  for (const part of chunks(rebinding)) {
    await tx.trx
      .updateTable('devices')
      .set({
        home_net_id: binding.homeNetId,
        home_ns_id: binding.homeNsId,
        as_id: binding.asId,
        roaming_net_ids: binding.roamingNetIds === null ? null : JSON.stringify(binding.roamingNetIds),
        ns_kek_label: binding.nsKekLabel ?? null,
        as_kek_label: binding.asKekLabel ?? null,
        bound_at: at.getTime(),
      })
      .where('dev_eui', 'in', part)
      .execute();
  }
  const moved = await moveToDevices(
    tx.trx,
    unique.filter((d) => unbound.has(d)).map((d) => unbound.get(d)!),
    binding,
    at.getTime(),
    'keep',
  );
  await writeAudit(tx.trx, audit);
  const byEui = new Map(moved.map((d) => [d.devEui as string, d]));
  for (const devEui of rebinding) {
    const r = bound.get(devEui)!;
    byEui.set(devEui, {
      ...deviceFromRow(r),
      homeNetId: binding.homeNetId,
      homeNsId: binding.homeNsId,
      asId: binding.asId,
      roamingNetIds: binding.roamingNetIds,
      nsKekLabel: binding.nsKekLabel ?? null,
      asKekLabel: binding.asKekLabel ?? null,
    });
  }
  return unique.map((d) => byEui.get(d)!);
}

/** Bound devices of `owner` go back to the inventory, keeping owner and claim; devices already unbound stay so. */
export async function unbindOwnedDevices(tx: Tx, owner: string | null, devEuis: readonly Eui64[], audit: readonly AuditEvent[]): Promise<void> {
  const unique = [...new Set(devEuis)];
  const { bound, unbound } = await lockDevices(tx, unique);
  for (const devEui of unique) {
    const row = bound.get(devEui) ?? unbound.get(devEui);
    if (row === undefined || !owns(owner, row)) throw notOwned(devEui, owner);
  }
  await moveToInventory(tx.trx, unique.filter((d) => bound.has(d)).map((d) => bound.get(d)!), {});
  await writeAudit(tx.trx, audit);
}

/** Back to the maker's stock: unbound, owner null, unlocked, not claimed. The claim code hash stays. */
export async function unclaimOwnedDevices(tx: Tx, owner: string | null, devEuis: readonly Eui64[], audit: readonly AuditEvent[]): Promise<void> {
  const unique = [...new Set(devEuis)];
  const { bound, unbound } = await lockDevices(tx, unique);
  for (const devEui of unique) {
    const row = bound.get(devEui) ?? unbound.get(devEui);
    if (row === undefined || !owns(owner, row)) throw notOwned(devEui, owner);
  }
  const stock = { owner: null, claim_locked: 0, claimed_at: null };
  await moveToInventory(tx.trx, unique.filter((d) => bound.has(d)).map((d) => bound.get(d)!), stock);
  for (const part of chunks(unique.filter((d) => unbound.has(d)))) {
    await tx.trx.updateTable('device_inventory').set(stock).where('dev_eui', 'in', part).execute();
  }
  await writeAudit(tx.trx, audit);
}

export async function updateClaim(
  tx: Tx,
  owner: string | null,
  devEui: Eui64,
  claim: { claimCodeHash: string | null; locked: boolean; expiresAt: Date | null },
  audit: readonly AuditEvent[],
): Promise<void> {
  const { bound, unbound } = await lockDevices(tx, [devEui]);
  const row = bound.get(devEui) ?? unbound.get(devEui);
  if (row === undefined || !owns(owner, row)) throw notOwned(devEui, owner);
  const set = { claim_code_hash: claimHashColumn(claim.claimCodeHash), claim_locked: claim.locked ? 1 : 0, claim_expires_at: ms(claim.expiresAt) };
  if (bound.has(devEui)) await tx.trx.updateTable('devices').set(set).where('dev_eui', '=', devEui).execute();
  else await tx.trx.updateTable('device_inventory').set(set).where('dev_eui', '=', devEui).execute();
  await writeAudit(tx.trx, audit);
}

/** DevNonce state forgotten for every JoinEUI of the device; the JoinNonce counter and RJcount1 stay. */
export async function resetDevNonces(tx: Tx, devEui: Eui64, audit: readonly AuditEvent[]): Promise<boolean> {
  const { bound, unbound } = await lockDevices(tx, [devEui]);
  if (bound.has(devEui)) {
    await tx.trx.updateTable('device_join_state').set({ last_dev_nonce: null, used_dev_nonces: '[]' }).where('dev_eui', '=', devEui).execute();
  } else if (unbound.has(devEui)) {
    await tx.trx.updateTable('device_inventory').set({ last_dev_nonce: null, used_dev_nonces: null }).where('dev_eui', '=', devEui).execute();
  } else {
    return false;
  }
  await writeAudit(tx.trx, audit);
  return true;
}

// ---- Ownership transfers ----

const transferToRow = (t: OwnershipTransferRecord): OwnershipTransfersTable => ({
  id: t.id,
  from_org: t.fromOrg,
  to_org: t.toOrg,
  token_sha256: t.tokenSha256,
  dev_euis: JSON.stringify(t.devEuis),
  state: t.state,
  created_at: t.createdAt.getTime(),
  expires_at: ms(t.expiresAt),
  decided_at: ms(t.decidedAt),
  accepted_by: t.acceptedBy,
});

const transferFromRow = (r: Selectable<OwnershipTransfersTable>): OwnershipTransferRecord => ({
  id: r.id,
  fromOrg: r.from_org,
  toOrg: r.to_org,
  tokenSha256: r.token_sha256,
  devEuis: JSON.parse(r.dev_euis) as Eui64[],
  state: r.state,
  createdAt: new Date(r.created_at),
  expiresAt: date(r.expires_at),
  decidedAt: date(r.decided_at),
  acceptedBy: r.accepted_by,
});

/** Refused (NOT_OWNED) unless every device is fromOrg's when the offer is made. */
export async function insertOwnershipTransfer(tx: Tx, t: OwnershipTransferRecord, audit: readonly AuditEvent[]): Promise<void> {
  await requireOwned(tx, t.fromOrg, t.devEuis);
  await tx.trx.insertInto('ownership_transfers').values(transferToRow(t)).execute();
  await writeAudit(tx.trx, audit);
}

async function requireOwned(tx: Tx, owner: string, devEuis: readonly string[]): Promise<{ bound: Map<string, DeviceRow>; unbound: Map<string, InventoryRow> }> {
  const rows = await lockDevices(tx, devEuis);
  for (const devEui of devEuis) {
    const row = rows.bound.get(devEui) ?? rows.unbound.get(devEui);
    if (row === undefined || row.owner !== owner) throw notOwned(devEui, owner, 'is no longer a device of');
  }
  return rows;
}

export async function getOwnershipTransfer(db: Db, id: string): Promise<OwnershipTransferRecord | undefined> {
  const row = await db.selectFrom('ownership_transfers').selectAll().where('id', '=', id).executeTakeFirst();
  return row === undefined ? undefined : transferFromRow(row);
}

export async function findOwnershipTransferByTokenSha256(db: Db, tokenSha256: string): Promise<OwnershipTransferRecord | undefined> {
  const row = await db.selectFrom('ownership_transfers').selectAll().where('token_sha256', '=', tokenSha256).executeTakeFirst();
  return row === undefined ? undefined : transferFromRow(row);
}

/** Offered by, offered to, or accepted by `organisation`; newest first (ties by id, descending). */
export async function listOwnershipTransfers(db: Db, organisation: string, o: ListOptions): Promise<{ items: OwnershipTransferRecord[]; next?: string }> {
  const limit = pageSize(o.limit);
  const after = o.after === undefined ? undefined : decodeOwnershipTransferCursor(o.after);
  const rows = await db
    .selectFrom('ownership_transfers')
    .selectAll()
    .where((eb) => eb.or([eb('from_org', '=', organisation), eb('to_org', '=', organisation), eb('accepted_by', '=', organisation)]))
    .$if(after !== undefined, (q) =>
      q.where((eb) => eb.or([eb('created_at', '<', after!.createdAt), eb.and([eb('created_at', '=', after!.createdAt), eb('id', '<', after!.id)])])),
    )
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit + 1)
    .execute();
  const page = rows.slice(0, limit).map(transferFromRow);
  const last = page.at(-1);
  return rows.length > limit && last !== undefined
    ? { items: page, next: encodeCursor('ownership-transfer', `${last.createdAt.getTime()}/${last.id}`) }
    : { items: page };
}

/**
 * The transfer row is locked first, so of two concurrent acceptances the second waits and then finds it accepted
 * (TRANSFER_NOT_OFFERED). Every device must still be fromOrg's (NOT_OWNED otherwise): all move, or none.
 */
export async function acceptOwnershipTransfer(tx: Tx, id: string, toOrg: string, at: Date, audit: readonly AuditEvent[]): Promise<void> {
  const row = await tx.trx.selectFrom('ownership_transfers').selectAll().where('id', '=', id).$if(tx.lock, (q) => q.forUpdate()).executeTakeFirst();
  const refuse = (why: string): StorageError => new StorageError('TRANSFER_NOT_OFFERED', `ownership transfer ${id} ${why}`);
  if (row === undefined) throw refuse('does not exist');
  if (row.state !== 'offered') throw refuse(`is ${row.state}`);
  if (row.to_org !== null && row.to_org !== toOrg) throw refuse(`is not offered to ${toOrg}`);
  if (row.from_org === toOrg) throw refuse(`cannot be accepted by its sender`);
  if (row.expires_at !== null && row.expires_at <= at.getTime()) throw refuse('has expired');
  const devEuis = JSON.parse(row.dev_euis) as string[];
  const { bound, unbound } = await requireOwned(tx, row.from_org, devEuis);
  const change = { owner: toOrg, claim_locked: 0, claimed_at: at.getTime() };
  await moveToInventory(tx.trx, devEuis.filter((d) => bound.has(d)).map((d) => bound.get(d)!), change);
  for (const part of chunks(devEuis.filter((d) => unbound.has(d)))) {
    await tx.trx.updateTable('device_inventory').set(change).where('dev_eui', 'in', part).execute();
  }
  await tx.trx.updateTable('ownership_transfers').set({ state: 'accepted', decided_at: at.getTime(), accepted_by: toOrg }).where('id', '=', id).execute();
  await writeAudit(tx.trx, audit);
}

export async function cancelOwnershipTransfer(tx: Tx, id: string, at: Date, audit: readonly AuditEvent[]): Promise<boolean> {
  const result = await tx.trx
    .updateTable('ownership_transfers')
    .set({ state: 'cancelled', decided_at: at.getTime() })
    .where('id', '=', id)
    .where('state', '=', 'offered')
    .executeTakeFirst();
  if (result.numUpdatedRows === 0n) return false;
  await writeAudit(tx.trx, audit);
  return true;
}
