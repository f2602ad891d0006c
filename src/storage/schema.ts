import type { Generated } from 'kysely';

/*
 * The tables as Kysely sees them, identical on SQLite and PostgreSQL (the migrations differ, the shape does not).
 *
 * Conventions, kept the same on both databases so one row mapping serves both:
 * - EUIs, NetIDs and DevAddrs are canonical upper-case hex text (CHECKed in the migrations).
 * - Instants are epoch milliseconds (SQLite INTEGER, PostgreSQL BIGINT read back as a JS number).
 * - Lists and free-form details are JSON text, so both databases store and return the same bytes.
 * - Booleans are written as 0/1 (PostgreSQL accepts them for BOOLEAN) and read back with Boolean().
 *
 * Roadmap note: ownership, bindings and the bootstrap state will arrive as their own tables keyed by dev_eui
 * (or nullable columns added by a later migration); nothing here assumes a device has none of them.
 */
export interface Database {
  devices: DevicesTable;
  device_join_state: DeviceJoinStateTable;
  sessions: SessionsTable;
  peers: PeersTable;
  key_records: KeyRecordsTable;
  audit_events: AuditEventsTable;
  makers: MakersTable;
  batches: BatchesTable;
  derivation_keys: DerivationKeysTable;
  device_inventory: DeviceInventoryTable;
  transfers: TransfersTable;
}

export interface MakersTable {
  name: string;
  kind: string;
  key_id: string;
  /** JSON object (a public JWK). */
  public_jwk: string;
  created_at: number;
}

export interface BatchesTable {
  batch_id: string;
  maker: string;
  kind: string;
  payload_sha256: string;
  device_count: number;
  created_at: number;
  imported_at: number;
}

export interface DerivationKeysTable {
  id: string;
  maker: string;
  key_handle: string;
  batch_id: string;
  created_at: number;
}

export interface DeviceInventoryTable {
  dev_eui: string;
  join_eui: string;
  mac_version: string;
  app_key_handle: string;
  nwk_key_handle: string | null;
  maker: string;
  batch_id: string;
  profile: string | null;
  serial_number: string | null;
  claim_code_hash: string | null;
  /** Carried over from the sending Join Server on a transfer, so JoinNonces keep increasing; 0 otherwise. */
  last_join_nonce: number;
  last_dev_nonce: number | null;
  created_at: number;
}

export interface TransfersTable {
  batch_id: string;
  recipient: string;
  /** JSON array of DevEUIs. */
  dev_euis: string;
  state: 'pending' | 'confirmed';
  created_at: number;
  confirmed_at: number | null;
}

export interface DevicesTable {
  dev_eui: string;
  join_eui: string;
  mac_version: string;
  app_key_handle: string;
  nwk_key_handle: string | null;
  home_net_id: string;
  home_ns_id: string | null;
  as_id: string | null;
  /** JSON array of NetIDs, or NULL for "any network we have an agreement with". */
  roaming_net_ids: string | null;
  /** The device's JoinNonce counter, one per device across JoinEUIs; 0 = none issued yet. */
  last_join_nonce: Generated<number>;
  created_at: number;
}

/** DevNonce/RJcount1 state per (DevEUI, JoinEUI); a missing row reads as the initial state. */
export interface DeviceJoinStateTable {
  dev_eui: string;
  join_eui: string;
  last_dev_nonce: number | null;
  /** JSON array of numbers, oldest first. */
  used_dev_nonces: string;
  last_rj_count1: number | null;
  updated_at: number;
}

export interface SessionsTable {
  /** Insertion order; "most recent" for pruning. Never exposed. */
  seq: Generated<number>;
  dev_eui: string;
  session_key_id: string;
  join_eui: string;
  scheme: 'legacy' | 'lorawan11';
  join_nonce: number;
  dev_nonce: number;
  net_id: string;
  dev_addr: string;
  created_at: number;
}

export interface PeersTable {
  id: string;
  kind: 'ns' | 'as' | 'claim';
  net_id: string | null;
  ns_id: string | null;
  as_id: string | null;
  token_sha256: string | null;
  client_cert_sha256: string | null;
  kek_label: string | null;
  /** 0/1 on SQLite, BOOLEAN on PostgreSQL. */
  allow_clear_keys: boolean | number;
  created_at: number;
}

export interface KeyRecordsTable {
  handle: string;
  usage: 'root' | 'kek' | 'receiving' | 'derivation';
  sealed: Buffer;
  created_at: number;
}

export interface AuditEventsTable {
  id: Generated<number>;
  at: number;
  actor: string;
  action: string;
  subject: string;
  outcome: string;
  /** JSON object. */
  details: string;
}
