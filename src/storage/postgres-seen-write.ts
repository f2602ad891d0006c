import type pg from 'pg';
import { type GroupItem, type PendingReservation, type Plan, type ReservationWrite, planGroup } from './group-plan.js';
import { auditArrays, sessionArrays } from './postgres-write-arrays.js';

/*
 * The group commit's one-statement path on PostgreSQL (docs/storage.md, "Group commit (PostgreSQL)"): reservations
 * that brought the state their caller read with the device (reserveJoin's `seen`) are decided on it, and all their
 * writes go in one autocommitted statement, instead of BEGIN, lock, read, write, COMMIT.
 *
 * The statement writes a device only if its JoinNonce counter and join state are still exactly those the decision
 * was made on, and it runs under REPEATABLE READ (its connections' default, see postgres.ts): it compares them in its
 * snapshot, and a row another transaction changed after that snapshot makes its write fail with a serialization
 * failure instead of overwriting the change. (Under READ COMMITTED a write that waited for a lock re-checks only the
 * row it writes, so the comparison could pass on a stale read of the other table.) Every other writer of a device's
 * join state locks the device row first (kysely-storage.ts, commissioning-store.ts), so a change is always a change
 * of one of the two rows compared. Devices whose state changed are not written; their reservations are decided again
 * by the caller on a locked read, as is the whole group when the statement fails.
 *
 * Only reservations alone with their device in the group come here (withSeenAlone), so each device has one row to
 * compare and at most one new session: pruning keeps its `sessionLimit − 1` most recent older sessions.
 */

export type SeenWriteResult =
  /** `plans[i]` for `group[i]`, or undefined when the device's state had changed: decide it again on a locked read. */
  | { readonly plans: readonly (Plan | undefined)[] }
  | { readonly failed: unknown };

/** Decides `group` (every reservation with `seen`, one per device) on the states it saw, and writes what still holds. */
export async function commitOnSeen(pool: pg.Pool, group: readonly PendingReservation[]): Promise<SeenWriteResult> {
  const items: GroupItem[] = [];
  const plans = planGroup(group, group.map((p) => p.seen), items);
  const writes = items.filter((item): item is ReservationWrite => item.kind === 'reserve');
  if (writes.length === 0) return { plans };
  let written: Set<string>;
  try {
    written = await writeIfUnchanged(pool, writes);
  } catch (failed) {
    return { failed };
  }
  return { plans: plans.map((plan) => ('item' in plan && !written.has((items[plan.item] as ReservationWrite).devEui) ? undefined : plan)) };
}

/** One statement: the devices whose state is unchanged get their writes; returns their DevEUIs. */
async function writeIfUnchanged(pool: pg.Pool, writes: readonly ReservationWrite[]): Promise<Set<string>> {
  const audits = writes.flatMap((w) => (w.audit === undefined ? [] : [{ devEui: w.devEui, row: w.audit }]));
  const { rows } = await pool.query<{ dev_eui: string }>({
    name: 'joinkeep_group_write_seen',
    text: `with expected as (
        select * from unnest($1::text[], $2::text[], $3::int[], $4::bool[], $5::int[], $6::text[], $7::int[])
          as e(dev_eui, join_eui, last_join_nonce, has_state, last_dev_nonce, used_dev_nonces, last_rj_count1)),
      unchanged as (
        select e.dev_eui from expected e
          join devices d on d.dev_eui = e.dev_eui and d.last_join_nonce = e.last_join_nonce
          left join device_join_state s on s.dev_eui = e.dev_eui and s.join_eui = e.join_eui
        where case when e.has_state
          then s.dev_eui is not null and s.last_dev_nonce is not distinct from e.last_dev_nonce
            and s.used_dev_nonces = e.used_dev_nonces and s.last_rj_count1 is not distinct from e.last_rj_count1
          else s.dev_eui is null end),
      nonce as (
        update devices d set last_join_nonce = v.join_nonce
        from unnest($1::text[], $8::int[]) as v(dev_eui, join_nonce)
        where d.dev_eui = v.dev_eui and v.dev_eui in (select dev_eui from unchanged)),
      state as (
        insert into device_join_state (dev_eui, join_eui, last_dev_nonce, used_dev_nonces, last_rj_count1, updated_at)
        select v.dev_eui, v.join_eui, v.last_dev_nonce, v.used_dev_nonces, v.last_rj_count1, v.updated_at
        from unnest($1::text[], $2::text[], $9::int[], $10::text[], $11::int[], $12::int8[])
          as v(dev_eui, join_eui, last_dev_nonce, used_dev_nonces, last_rj_count1, updated_at)
        where v.dev_eui in (select dev_eui from unchanged)
        on conflict (dev_eui, join_eui) do update set last_dev_nonce = excluded.last_dev_nonce,
          used_dev_nonces = excluded.used_dev_nonces, last_rj_count1 = excluded.last_rj_count1, updated_at = excluded.updated_at),
      session as (
        insert into sessions (dev_eui, session_key_id, join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at)
        select n.dev_eui, n.session_key_id, n.join_eui, n.scheme, n.join_nonce, n.dev_nonce, n.net_id, n.dev_addr, n.created_at
        from unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::int[], $18::int[], $19::text[], $20::text[], $21::int8[])
          with ordinality as n(dev_eui, session_key_id, join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at, ord)
        where n.dev_eui in (select dev_eui from unchanged)
        order by n.ord),
      pruned as (
        delete from sessions where seq in (
          select old.seq from unnest($1::text[], $22::int[]) as k(dev_eui, keep)
          cross join lateral (select s.seq from sessions s where s.dev_eui = k.dev_eui order by s.seq desc offset k.keep) old
          where k.dev_eui in (select dev_eui from unchanged))),
      audit as (
        insert into audit_events (at, actor, action, subject, outcome, details, organisation)
        select a.at, a.actor, a.action, a.subject, a.outcome, a.details, a.organisation
        from unnest($23::text[], $24::int8[], $25::text[], $26::text[], $27::text[], $28::text[], $29::text[], $30::text[])
          with ordinality as a(dev_eui, at, actor, action, subject, outcome, details, organisation, ord)
        where a.dev_eui in (select dev_eui from unchanged)
        order by a.ord)
      select dev_eui from unchanged`,
    values: [
      writes.map((w) => w.devEui),
      writes.map((w) => w.joinEui),
      writes.map((w) => w.expect.last_join_nonce),
      writes.map((w) => w.expect.state_dev_eui !== null),
      writes.map((w) => w.expect.last_dev_nonce),
      writes.map((w) => w.expect.used_dev_nonces),
      writes.map((w) => w.expect.last_rj_count1),
      writes.map((w) => w.joinNonce),
      writes.map((w) => w.state.last_dev_nonce ?? null),
      writes.map((w) => w.state.used_dev_nonces ?? '[]'),
      writes.map((w) => w.state.last_rj_count1 ?? null),
      writes.map((w) => w.state.updated_at),
      ...sessionArrays(writes),
      // This reservation's new session is not visible to the statement's snapshot: keep sessionLimit − 1 older ones.
      writes.map((w) => w.sessionLimit - 1),
      audits.map((a) => a.devEui),
      ...auditArrays(audits.map((a) => a.row)),
    ],
  });
  return new Set(rows.map((r) => r.dev_eui));
}
