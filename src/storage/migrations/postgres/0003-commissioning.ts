import type { Kysely } from 'kysely';
import { runStatements } from '../run-statements.js';

/*
 * Commissioning (docs/commissioning.md), PostgreSQL: organisations, their API keys, ownership transfers between them,
 * and the ownership columns of devices. Same tables and columns as the SQLite migration. Devices keep living in two
 * tables: `device_inventory` holds the unbound ones (a maker's unclaimed stock, owner null, or a claimed device not
 * yet bound), `devices` the bound, activatable ones. Existing tables only gain columns.
 */
const hex = (column: string, digits: number): string => `${column} ~ '^[0-9A-F]{${digits}}$'`;
const sha256 = (column: string): string => `${column} ~ '^[0-9a-f]{64}$'`;

/** The columns `devices` and `device_inventory` share: who owns the device and how it may be claimed. */
const claimColumns = (table: string): string[] => [
  `alter table ${table} add column owner text references organisations (id)`,
  `alter table ${table} add column claim_locked integer not null default 0 check (claim_locked in (0, 1))`,
  `alter table ${table} add column claim_expires_at bigint`,
  `alter table ${table} add column claimed_at bigint`,
  `create index ${table}_owner on ${table} (owner, dev_eui)`,
];

export async function up(db: Kysely<unknown>): Promise<void> {
  await runStatements(db, [
    `create table organisations (
      id text primary key check (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
      name text not null,
      roles text not null default '[]',
      net_ids text not null default '[]',
      ns_ids text not null default '[]',
      as_ids text not null default '[]',
      created_at bigint not null
    )`,

    // Only the SHA-256 of a key's secret is stored; the id is the public half of `jk_<id>_<secret>`.
    `create table api_keys (
      id text primary key,
      organisation text references organisations (id),
      name text not null,
      secret_sha256 text not null unique check (${sha256('secret_sha256')}),
      scopes text not null default '[]',
      created_at bigint not null,
      expires_at bigint,
      revoked_at bigint
    )`,
    `create index api_keys_organisation on api_keys (organisation, created_at)`,

    `create table ownership_transfers (
      id text primary key,
      from_org text not null references organisations (id),
      to_org text references organisations (id),
      token_sha256 text unique check (${sha256('token_sha256')}),
      dev_euis text not null,
      state text not null,
      created_at bigint not null,
      expires_at bigint,
      decided_at bigint,
      accepted_by text references organisations (id)
    )`,
    `create index ownership_transfers_from_org on ownership_transfers (from_org, created_at)`,
    `create index ownership_transfers_to_org on ownership_transfers (to_org, created_at)`,
    `create index ownership_transfers_accepted_by on ownership_transfers (accepted_by, created_at)`,

    `alter table makers add column organisation text references organisations (id)`,
    `create index makers_organisation on makers (organisation)`,
    // A JoinEUI is served here when any device uses it, bound or not (UnknownDevEUI rather than UnknownReceiver).
    `create index device_inventory_join_eui on device_inventory (join_eui)`,
    `alter table peers add column organisation text references organisations (id)`,
    // The organisation whose trail an event belongs to; not a foreign key: the trail outlives what it names.
    `alter table audit_events add column organisation text`,
    `create index audit_events_organisation on audit_events (organisation, id)`,

    // Unbound devices: the join state a move out of `devices` carried (for the device's own JoinEUI).
    ...claimColumns('device_inventory'),
    `alter table device_inventory add column used_dev_nonces text`,
    `alter table device_inventory add column last_rj_count1 integer check (last_rj_count1 between 0 and 65535)`,

    // Bound devices: where they came from (null for devices the operator added), their claim, and the binding's KEKs.
    ...claimColumns('devices'),
    `alter table devices add column maker text`,
    `alter table devices add column batch_id text`,
    `alter table devices add column profile text`,
    `alter table devices add column serial_number text`,
    `alter table devices add column claim_code_hash text check (${hex('claim_code_hash', 64)})`,
    `alter table devices add column ns_kek_label text`,
    `alter table devices add column as_kek_label text`,
    `alter table devices add column bound_at bigint`,
  ]);
}
