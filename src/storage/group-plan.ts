import type { Insertable } from 'kysely';
import type { Eui64 } from '../protocol/index.js';
import { StorageError } from './errors.js';
import { checkDecision } from './kysely-storage.js';
import { auditToRow, initialJoinState, joinStateToRow, sessionToRow } from './records.js';
import type { AuditEventsTable, DeviceJoinStateTable, SessionsTable } from './schema.js';
import type { JoinDecision, JoinRow, JoinState, ReserveJoinOptions, ReserveJoinResult } from './storage.js';

/*
 * Deciding a group of reservations (group commit, docs/storage.md): shared by the storages that commit several
 * reservations in one transaction. Each reservation decides on its device's row as the earlier reservations of the
 * group leave it, so the DevNonce and JoinNonce rules hold inside a group exactly as they do across groups.
 */

export type AuditRow = Insertable<AuditEventsTable>;

/** One reservation's writes (the rows of a group commit, on every storage), valid only if the device's row still equals `expect` under the write lock. */
export interface ReservationWrite {
  readonly kind: 'reserve';
  readonly devEui: string;
  readonly joinEui: string;
  readonly expect: JoinRow;
  readonly joinNonce: number;
  readonly state: Insertable<DeviceJoinStateTable>;
  readonly session: Insertable<SessionsTable>;
  readonly audit: AuditRow | undefined;
  readonly sessionLimit: number;
}

export interface AuditWrite {
  readonly kind: 'audit';
  readonly row: AuditRow;
}

export type GroupItem = ReservationWrite | AuditWrite;

/** One reservation, or one audit event, waiting for its group. */
export type Pending = PendingReservation | PendingAudit;

export interface PendingReservation {
  readonly kind: 'reserve';
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly decide: (current: JoinState) => JoinDecision<unknown>;
  readonly sessionLimit: number;
  /** The device's state as the caller read it with the device (reserveJoin's `seen`): decided on instead of a read. */
  readonly seen?: JoinRow | undefined;
  /** performance.now() when queued: bounds how long it may wait for another process's write lock. */
  readonly since: number;
  readonly resolve: (result: ReserveJoinResult<unknown>) => void;
  readonly reject: (error: unknown) => void;
}

export interface PendingAudit {
  readonly kind: 'audit';
  readonly row: ReturnType<typeof auditToRow>;
  readonly since: number;
  readonly resolve: (result: undefined) => void;
  readonly reject: (error: unknown) => void;
}

export type Outcome =
  | { readonly ok: ReserveJoinResult<unknown> | undefined }
  | { readonly error: unknown };

/** What the main thread decided for one queued request before the group is written. */
export type Plan =
  | { readonly done: Outcome }
  | { readonly item: number; readonly committed?: ReserveJoinResult<unknown> };

/** reserveJoin's `seen` as a row to decide on, when it is the state of this reservation's device and JoinEUI. */
export function seenRow(devEui: Eui64, joinEui: Eui64, options: ReserveJoinOptions): JoinRow | undefined {
  const seen = options.seen;
  return seen !== undefined && seen.devEui === devEui && seen.joinEui === joinEui ? seen.row : undefined;
}

/**
 * The group with `seen` kept only for a device that has no other reservation in it; the others' rows are read. So a
 * device's reservations in one group all decide on one row, and a reservation decided on `seen` is alone in the group
 * with its device: going back to the queue (a conflict, a refusal to confirm) never reorders a device's requests.
 */
export function withSeenAlone<P extends Pending>(group: readonly P[]): P[] {
  const count = new Map<string, number>();
  for (const p of group) if (p.kind === 'reserve') count.set(p.devEui, (count.get(p.devEui) ?? 0) + 1);
  return group.map((p) => (p.kind === 'reserve' && p.seen !== undefined && count.get(p.devEui)! > 1 ? { ...p, seen: undefined } : p));
}

/**
 * A reservation decided on the state its caller saw goes back to the queue, to be decided on a fresh read, when it
 * was refused: a refusal writes nothing, so nothing confirms that the state it relied on was still current.
 */
export const refusedOnSeen = (p: Pending, plan: Plan): boolean =>
  p.kind === 'reserve' && p.seen !== undefined && 'done' in plan && 'ok' in plan.done && plan.done.ok !== undefined && 'refused' in plan.done.ok;

/**
 * Decides every request of the group in arrival order on the rows read for it, and appends the writes to `items`.
 * A reservation decides on its device's row as the earlier reservations of the group leave it.
 */
export function planGroup(group: readonly Pending[], rows: readonly (JoinRow | undefined)[], items: GroupItem[]): Plan[] {
  const joinNonces = new Map<string, number>();
  const states = new Map<string, Omit<JoinRow, 'last_join_nonce'>>();
  let next = 0;
  return group.map((p): Plan => {
    if (p.kind === 'audit') return { item: items.push({ kind: 'audit', row: p.row }) - 1 };
    const read = rows[next++];
    if (read === undefined) return { done: { error: new StorageError('DEVICE_NOT_FOUND', `device ${p.devEui} not found`) } };
    const key = `${p.devEui}/${p.joinEui}`;
    const { last_join_nonce: _, ...readState } = read;
    const base: JoinRow = { last_join_nonce: joinNonces.get(p.devEui) ?? read.last_join_nonce, ...(states.get(key) ?? readState) };
    const current = joinStateOf(base);
    let decision: JoinDecision<unknown>;
    try {
      decision = p.decide(current);
    } catch (error) {
      return { done: { error } };
    }
    if ('refuse' in decision) return { done: { ok: { refused: decision.refuse } } };
    const broken = checkDecision(p.devEui, p.joinEui, current, decision.commit, decision.session);
    if (broken !== undefined) return { done: { error: broken } };
    // The decision's own instant (the engine's injected clock), not a clock read here.
    const state = joinStateToRow(p.devEui, p.joinEui, decision.commit, decision.session.createdAt.getTime());
    const item = items.push({
      kind: 'reserve',
      devEui: p.devEui,
      joinEui: p.joinEui,
      expect: base,
      joinNonce: decision.commit.lastJoinNonce,
      state,
      session: sessionToRow(decision.session),
      audit: decision.audit === undefined ? undefined : auditToRow(decision.audit),
      sessionLimit: p.sessionLimit,
    }) - 1;
    joinNonces.set(p.devEui, decision.commit.lastJoinNonce);
    states.set(key, { state_dev_eui: p.devEui, last_dev_nonce: state.last_dev_nonce ?? null, used_dev_nonces: state.used_dev_nonces ?? '[]', last_rj_count1: state.last_rj_count1 ?? null });
    return { item, committed: { committed: decision.commit, session: decision.session } };
  });
}

const joinStateOf = (row: JoinRow): JoinState =>
  row.state_dev_eui === null
    ? initialJoinState(row.last_join_nonce)
    : {
        lastJoinNonce: row.last_join_nonce,
        lastDevNonce: row.last_dev_nonce,
        usedDevNonces: JSON.parse(row.used_dev_nonces ?? '[]') as number[],
        lastRjCount1: row.last_rj_count1,
      };
