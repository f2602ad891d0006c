import type { Kysely } from 'kysely';
import { runStatements } from '../run-statements.js';

/*
 * Personalization (docs/specs/sealed-batch.md), PostgreSQL: registered makers and their signing keys, imported batches
 * (for idempotence: the same batch twice imports nothing), derivation masters of secure-element vendors, and the
 * device inventory — devices whose root keys are in custody but which no buyer has claimed yet, so no network may
 * activate them. A claimed device moves to `devices` (commissioning). The batch files themselves are not stored.
 */
const hex = (column: string, digits: number): string => `${column} ~ '^[0-9A-F]{${digits}}$'`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await runStatements(db, [
    `create table makers (
      name text primary key check (length(name) between 1 and 64),
      kind text not null,
      key_id text not null unique,
      public_jwk text not null,
      created_at bigint not null
    )`,

    `create table batches (
      batch_id text primary key,
      maker text not null references makers (name),
      kind text not null,
      payload_sha256 text not null check (${hex('payload_sha256', 64)}),
      device_count integer not null,
      created_at bigint not null,
      imported_at bigint not null
    )`,

    `create table derivation_keys (
      id text primary key,
      maker text not null references makers (name),
      key_handle text not null unique,
      batch_id text not null references batches (batch_id),
      created_at bigint not null
    )`,

    `create table device_inventory (
      dev_eui text primary key check (${hex('dev_eui', 16)}),
      join_eui text not null check (${hex('join_eui', 16)}),
      mac_version text not null,
      app_key_handle text not null,
      nwk_key_handle text,
      maker text not null references makers (name),
      batch_id text not null references batches (batch_id),
      profile text,
      serial_number text,
      claim_code_hash text check (${hex('claim_code_hash', 64)}),
      last_join_nonce integer not null default 0 check (last_join_nonce between 0 and 16777215),
      last_dev_nonce integer check (last_dev_nonce between 0 and 65535),
      created_at bigint not null
    )`,
    // Devices handed over to another Join Server (docs/specs/sealed-batch.md, "Transfer"): kept until the receiver's
    // signed receipt arrives; then the devices and their keys are retired here.
    `create table transfers (
      batch_id text primary key,
      recipient text not null references makers (name),
      dev_euis text not null,
      state text not null,
      created_at bigint not null,
      confirmed_at bigint
    )`,
    `create index device_inventory_batch on device_inventory (batch_id)`,
    `create index device_inventory_maker on device_inventory (maker, dev_eui)`,
  ]);
}
