import type { AuditRow, ReservationWrite } from './group-plan.js';

/*
 * The group commit's rows as parameter arrays for PostgreSQL's `unnest(…)`, one array per column, shared by the locked
 * group write (postgres-group-commit.ts) and the one-statement write on `seen` (postgres-seen-write.ts).
 */

/**
 * Each reservation's new session, as the arrays of `unnest($n::text[], …)` for the columns dev_eui, session_key_id,
 * join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at (types text, text, text, text, int, int,
 * text, text, int8).
 */
export function sessionArrays(writes: readonly ReservationWrite[]): unknown[][] {
  return [
    writes.map((w) => w.session.dev_eui),
    writes.map((w) => w.session.session_key_id),
    writes.map((w) => w.session.join_eui),
    writes.map((w) => w.session.scheme),
    writes.map((w) => w.session.join_nonce),
    writes.map((w) => w.session.dev_nonce),
    writes.map((w) => w.session.net_id),
    writes.map((w) => w.session.dev_addr),
    writes.map((w) => w.session.created_at),
  ];
}

/**
 * Audit rows as the arrays of `unnest($n::int8[], …)` for the columns at, actor, action, subject, outcome, details,
 * organisation (types int8, text, text, text, text, text, text).
 */
export function auditArrays(rows: readonly AuditRow[]): unknown[][] {
  return [
    rows.map((a) => a.at),
    rows.map((a) => a.actor),
    rows.map((a) => a.action),
    rows.map((a) => a.subject),
    rows.map((a) => a.outcome),
    rows.map((a) => a.details ?? '{}'),
    rows.map((a) => a.organisation ?? null),
  ];
}
