import type { Kysely } from 'kysely';
import { runStatements } from '../run-statements.js';

/*
 * Initial schema, SQLite. STRICT tables so a wrong type is an error instead of a silent affinity conversion.
 * Identifier columns are CHECKed to be canonical upper-case hex: a lower-case EUI would otherwise create a second,
 * unreachable row for the same device. Columns whose sets of values will grow with the roadmap (MAC versions,
 * peer kinds, key usages) are deliberately not CHECKed, because changing a CHECK on SQLite means rebuilding the table.
 */
const hex = (column: string, digits: number): string =>
  `length(${column}) = ${digits} and ${column} not glob '*[^0-9A-F]*'`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await runStatements(db, [
    `create table devices (
      dev_eui text primary key check (${hex('dev_eui', 16)}),
      join_eui text not null check (${hex('join_eui', 16)}),
      mac_version text not null,
      app_key_handle text not null,
      nwk_key_handle text,
      home_net_id text not null check (${hex('home_net_id', 6)}),
      home_ns_id text check (${hex('home_ns_id', 16)}),
      as_id text,
      roaming_net_ids text check (json_valid(roaming_net_ids)),
      last_join_nonce integer not null default 0 check (last_join_nonce between 0 and 16777215),
      created_at integer not null
    ) strict`,
    `create index devices_join_eui on devices (join_eui)`,

    `create table device_join_state (
      dev_eui text not null references devices (dev_eui) on delete cascade,
      join_eui text not null check (${hex('join_eui', 16)}),
      last_dev_nonce integer check (last_dev_nonce between 0 and 65535),
      used_dev_nonces text not null default '[]' check (json_valid(used_dev_nonces)),
      last_rj_count1 integer check (last_rj_count1 between 0 and 65535),
      updated_at integer not null,
      primary key (dev_eui, join_eui)
    ) strict`,

    `create table sessions (
      seq integer primary key autoincrement,
      dev_eui text not null references devices (dev_eui) on delete cascade,
      session_key_id text not null,
      join_eui text not null check (${hex('join_eui', 16)}),
      scheme text not null,
      join_nonce integer not null,
      dev_nonce integer not null,
      net_id text not null check (${hex('net_id', 6)}),
      dev_addr text not null check (${hex('dev_addr', 8)}),
      created_at integer not null,
      unique (dev_eui, session_key_id)
    ) strict`,
    `create index sessions_dev_eui_seq on sessions (dev_eui, seq)`,

    `create table peers (
      id text primary key,
      kind text not null,
      net_id text check (${hex('net_id', 6)}),
      ns_id text check (${hex('ns_id', 16)}),
      as_id text,
      token_sha256 text unique,
      client_cert_sha256 text unique,
      kek_label text,
      allow_clear_keys integer not null default 0 check (allow_clear_keys in (0, 1)),
      created_at integer not null
    ) strict`,
    `create index peers_net_id on peers (net_id)`,
    `create index peers_as_id on peers (as_id)`,

    `create table key_records (
      handle text primary key,
      usage text not null,
      sealed blob not null,
      created_at integer not null
    ) strict`,

    `create table audit_events (
      id integer primary key autoincrement,
      at integer not null,
      actor text not null,
      action text not null,
      subject text not null,
      outcome text not null,
      details text not null default '{}' check (json_valid(details))
    ) strict`,
    `create index audit_events_subject on audit_events (subject, id)`,
    `create index audit_events_action on audit_events (action, id)`,
  ]);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await runStatements(db, [
    'drop table audit_events',
    'drop table key_records',
    'drop table peers',
    'drop table sessions',
    'drop table device_join_state',
    'drop table devices',
  ]);
}
