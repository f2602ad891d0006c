import type { Insertable, Selectable } from 'kysely';
import type { DevAddr, Eui64, MacVersion, NetId } from '../protocol/index.js';
import type {
  AuditEventsTable,
  DeviceJoinStateTable,
  DevicesTable,
  KeyRecordsTable,
  PeersTable,
  SessionsTable,
} from './schema.js';
import type { AuditEvent, DeviceRecord, JoinRow, JoinState, PeerRecord, SealedKeyRecord, SeenJoinState, SessionRecord } from './storage.js';

/*
 * Rows ↔ records, one pair per table. The same code serves SQLite and PostgreSQL: both return numbers for
 * integers (PostgreSQL INT8 through the pool's type parser), Buffers for blobs, text for JSON.
 */

export function deviceToRow(d: DeviceRecord): Insertable<DevicesTable> {
  return {
    dev_eui: d.devEui,
    join_eui: d.joinEui,
    mac_version: d.macVersion,
    app_key_handle: d.appKeyHandle,
    nwk_key_handle: d.nwkKeyHandle,
    home_net_id: d.homeNetId,
    home_ns_id: d.homeNsId,
    as_id: d.asId,
    roaming_net_ids: d.roamingNetIds === null ? null : JSON.stringify(d.roamingNetIds),
    ns_kek_label: d.nsKekLabel ?? null,
    as_kek_label: d.asKekLabel ?? null,
    created_at: d.createdAt.getTime(),
  };
}

export function deviceFromRow(r: Pick<Selectable<DevicesTable>, keyof DeviceRow>): DeviceRecord {
  return {
    devEui: r.dev_eui as Eui64,
    joinEui: r.join_eui as Eui64,
    macVersion: r.mac_version as MacVersion,
    appKeyHandle: r.app_key_handle,
    nwkKeyHandle: r.nwk_key_handle,
    homeNetId: r.home_net_id as NetId,
    homeNsId: r.home_ns_id as Eui64 | null,
    asId: r.as_id,
    roamingNetIds: r.roaming_net_ids === null ? null : (JSON.parse(r.roaming_net_ids) as NetId[]),
    nsKekLabel: r.ns_kek_label,
    asKekLabel: r.as_kek_label,
    createdAt: new Date(r.created_at),
  };
}

/** The columns deviceFromRow reads: what a look-up selects (a join reads only these, not the commissioning columns). */
export const DEVICE_ROW_COLUMNS = [
  'dev_eui', 'join_eui', 'mac_version', 'app_key_handle', 'nwk_key_handle', 'home_net_id', 'home_ns_id', 'as_id', 'roaming_net_ids', 'ns_kek_label', 'as_kek_label', 'created_at',
] as const satisfies readonly (keyof DevicesTable)[];
type DeviceRow = Pick<DevicesTable, (typeof DEVICE_ROW_COLUMNS)[number]>;

/** The join-state columns read with a device (getDeviceForJoin), named as in a JoinRow; `d` = devices, `s` = device_join_state. */
export const SEEN_STATE_COLUMNS = ['d.last_join_nonce', 's.dev_eui as state_dev_eui', 's.last_dev_nonce', 's.used_dev_nonces', 's.last_rj_count1'] as const;

/** A row of DEVICE_ROW_COLUMNS and SEEN_STATE_COLUMNS, as getDeviceForJoin reads it. */
export type DeviceForJoinRow = DeviceRow & JoinRow;

/** A device row read with its join state (SEEN_STATE_COLUMNS) as the device and the state reserveJoin may decide on. */
export function deviceForJoinFromRow(r: DeviceForJoinRow): { device: DeviceRecord; seen: SeenJoinState } {
  const device = deviceFromRow(r);
  const row: JoinRow = {
    last_join_nonce: r.last_join_nonce,
    state_dev_eui: r.state_dev_eui,
    last_dev_nonce: r.last_dev_nonce,
    used_dev_nonces: r.used_dev_nonces,
    last_rj_count1: r.last_rj_count1,
  };
  return { device, seen: { devEui: device.devEui, joinEui: device.joinEui, row } };
}

export const initialJoinState = (lastJoinNonce: number): JoinState => ({
  lastJoinNonce,
  lastDevNonce: null,
  usedDevNonces: [],
  lastRjCount1: null,
});

export function joinStateFromRow(lastJoinNonce: number, r: Selectable<DeviceJoinStateTable> | undefined): JoinState {
  if (r === undefined) return initialJoinState(lastJoinNonce);
  return {
    lastJoinNonce,
    lastDevNonce: r.last_dev_nonce,
    usedDevNonces: JSON.parse(r.used_dev_nonces) as number[],
    lastRjCount1: r.last_rj_count1,
  };
}

export function joinStateToRow(devEui: Eui64, joinEui: Eui64, s: JoinState, now: number): Insertable<DeviceJoinStateTable> {
  return {
    dev_eui: devEui,
    join_eui: joinEui,
    last_dev_nonce: s.lastDevNonce,
    used_dev_nonces: JSON.stringify(s.usedDevNonces),
    last_rj_count1: s.lastRjCount1,
    updated_at: now,
  };
}

export function sessionToRow(s: SessionRecord): Insertable<SessionsTable> {
  return {
    dev_eui: s.devEui,
    session_key_id: s.sessionKeyId,
    join_eui: s.joinEui,
    scheme: s.scheme,
    join_nonce: s.joinNonce,
    dev_nonce: s.devNonce,
    net_id: s.netId,
    dev_addr: s.devAddr,
    created_at: s.createdAt.getTime(),
  };
}

export function sessionFromRow(r: Omit<Selectable<SessionsTable>, 'seq'>): SessionRecord {
  return {
    sessionKeyId: r.session_key_id,
    devEui: r.dev_eui as Eui64,
    joinEui: r.join_eui as Eui64,
    scheme: r.scheme,
    joinNonce: r.join_nonce,
    devNonce: r.dev_nonce,
    netId: r.net_id as NetId,
    devAddr: r.dev_addr as DevAddr,
    createdAt: new Date(r.created_at),
  };
}

export function peerToRow(p: PeerRecord): Insertable<PeersTable> {
  return {
    id: p.id,
    kind: p.kind,
    net_id: p.netId,
    ns_id: p.nsId,
    as_id: p.asId,
    token_sha256: p.tokenSha256,
    client_cert_sha256: p.clientCertSha256,
    kek_label: p.kekLabel,
    // 0/1: better-sqlite3 cannot bind booleans, and PostgreSQL accepts '0'/'1' as BOOLEAN input.
    allow_clear_keys: p.allowClearKeys ? 1 : 0,
    created_at: p.createdAt.getTime(),
  };
}

/**
 * The application server of an AS-ID: the first by id if several share it. Chosen in code rather than with
 * ORDER BY … LIMIT 1, which made SQLite sort through a temporary B-tree on every join (35 µs, more than the look-up).
 */
export function firstApplicationServer(rows: readonly Selectable<PeersTable>[]): PeerRecord | undefined {
  const row = rows.reduce<Selectable<PeersTable> | undefined>((first, r) => (first === undefined || r.id < first.id ? r : first), undefined);
  return row === undefined ? undefined : peerFromRow(row);
}

export function peerFromRow(r: Selectable<PeersTable>): PeerRecord {
  return {
    kind: r.kind,
    id: r.id,
    netId: r.net_id as NetId | null,
    nsId: r.ns_id as Eui64 | null,
    asId: r.as_id,
    tokenSha256: r.token_sha256,
    clientCertSha256: r.client_cert_sha256,
    kekLabel: r.kek_label,
    allowClearKeys: Boolean(r.allow_clear_keys),
    createdAt: new Date(r.created_at),
  };
}

export function keyRecordToRow(k: SealedKeyRecord): Insertable<KeyRecordsTable> {
  return { handle: k.handle, usage: k.usage, sealed: Buffer.from(k.sealed), created_at: k.createdAt.getTime() };
}

export function keyRecordFromRow(r: Selectable<KeyRecordsTable>): SealedKeyRecord {
  return { handle: r.handle, usage: r.usage, sealed: Buffer.from(r.sealed), createdAt: new Date(r.created_at) };
}

export function auditToRow(e: AuditEvent): Insertable<AuditEventsTable> {
  return {
    at: e.at.getTime(),
    actor: e.actor,
    action: e.action,
    subject: e.subject,
    outcome: e.outcome,
    details: JSON.stringify(e.details),
    organisation: e.organisation ?? null,
  };
}

export function auditFromRow(r: Selectable<AuditEventsTable>): AuditEvent {
  return {
    id: r.id,
    at: new Date(r.at),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    outcome: r.outcome,
    details: JSON.parse(r.details) as Record<string, unknown>,
    // Absent rather than null for the operator's own events, as they were written before commissioning.
    ...(r.organisation === null ? {} : { organisation: r.organisation }),
  };
}

/** Claim-code hashes are stored as upper-case hex (the column is CHECKed); callers may pass either case. */
export function claimHashColumn(hash: string | null): string | null {
  return hash === null ? null : hash.toUpperCase();
}
