import type { Eui64 } from '../protocol/index.js';
import { type Outcome, type Pending, type PendingReservation, type Plan, planGroup } from './group-plan.js';
import { backoff, storageFailure, type ErrorClass } from './kysely-storage.js';
import type { auditToRow } from './records.js';
import type { SqliteWriter } from './sqlite-writer.js';
import type { GroupItem, ItemResult } from './sqlite-writer-protocol.js';
import type { JoinDecision, JoinState, ReserveJoinResult } from './storage.js';

/*
 * Group commit for reserveJoin on SQLite (docs/storage.md, "Group commit").
 *
 * With synchronous=FULL every COMMIT fsyncs the WAL: one commit per join made the fsync the largest single cost of a
 * join. Here the reservations that arrive in one turn of the event loop (and those that queue up while a group
 * commits) share one transaction, written by the SQLite writer thread (sqlite-writer-thread.ts) on its own
 * connection, so neither the statements nor the COMMIT's fsync run on the event loop:
 *
 * 1. read: the writer thread reads each reservation's row (JoinNonce counter and DevNonce state). It handles requests
 *    in order and the previous group has committed, so the rows include every earlier write of this process.
 * 2. decide, here on the main thread, in arrival order: `decide`, then checkDecision. A later reservation of the same
 *    device in the group decides on the row as the earlier one leaves it, so the DevNonce and JoinNonce rules hold
 *    inside a group exactly as they do across groups.
 * 3. commit: one BEGIN IMMEDIATE … COMMIT in the writer thread; each reservation in its own SAVEPOINT, written only if
 *    its row still equals the row it was decided on. Another process on the same file (serve --processes N) may have
 *    written the device between 1 and 3: that reservation is not written ("conflict") and goes back to the queue to be
 *    decided again on the new row, as if it had arrived later. A failed write rolls back to its savepoint: that
 *    reservation changes nothing and fails, the others are unaffected.
 * - every outcome — success, refusal or error — is delivered only after COMMIT returned, i.e. after the fsync.
 *   A refusal may depend on an earlier reservation of the same group, so it waits for the commit too.
 * - if BEGIN or COMMIT fails, nothing of the group was written and every reservation in it fails with the
 *   StorageError.
 * - another process holding the write lock must not stall this one: the writer's connection has busy_timeout 0, so a
 *   BEGIN IMMEDIATE that finds the lock taken fails at once with SQLITE_BUSY, the group goes back to the head of the
 *   queue (requests arriving meanwhile join it), and it is tried again after the event loop has run (setImmediate,
 *   then every millisecond) until `busyTimeoutMs` after its oldest request; then the group fails, as a blocking
 *   busy_timeout would have. Nothing of the group was written, and `decide` is pure, so deciding again is safe.
 * - audit events appended outside a join (refusals) ride in the next group: no transaction and no fsync of their
 *   own, and no blocking wait for the write lock either.
 */

/** SQLite's answer when the write lock is taken (SQLITE_BUSY and its extended codes). */
const isBusy = (error: unknown): boolean => String((error as { code?: unknown } | null)?.code ?? '').startsWith('SQLITE_BUSY');

export interface GroupCommitOptions {
  /** Most reservations in one transaction; more wait for the next group. */
  readonly maxGroupSize?: number;
  readonly classify: (error: unknown) => ErrorClass;
  readonly maxAttempts: number;
  /** Observes each committed group's size (tests, metrics). */
  readonly onGroupCommitted?: ((size: number) => void) | undefined;
  /** How long a request may wait for another process's write lock. */
  readonly busyTimeoutMs: number;
  /** Observes each time a group found the write lock taken and was put back (tests). */
  readonly onBusy?: (() => void) | undefined;
}

type GroupRun = { readonly busy: true } | { readonly busy: false; readonly again: readonly Pending[] };

export class SqliteGroupCommit {
  readonly #options: GroupCommitOptions;
  readonly #maxGroupSize: number;
  readonly #writer: SqliteWriter;
  #queue: Pending[] = [];
  #draining = false;

  constructor(writer: SqliteWriter, options: GroupCommitOptions) {
    this.#options = options;
    this.#maxGroupSize = options.maxGroupSize ?? 256;
    this.#writer = writer;
  }

  reserve<R>(devEui: Eui64, joinEui: Eui64, decide: (current: JoinState) => JoinDecision<R>, sessionLimit: number): Promise<ReserveJoinResult<R>> {
    return new Promise<ReserveJoinResult<R>>((resolve, reject) => {
      this.#enqueue({ kind: 'reserve', devEui, joinEui, decide, sessionLimit, since: performance.now(), resolve: resolve as PendingReservation['resolve'], reject });
    });
  }

  /** Appends an audit event in the next group's transaction; resolves once that group committed. */
  appendAudit(row: ReturnType<typeof auditToRow>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#enqueue({ kind: 'audit', row, since: performance.now(), resolve: () => resolve(), reject });
    });
  }

  #enqueue(p: Pending): void {
    this.#queue.push(p);
    if (!this.#draining) {
      this.#draining = true;
      // After the current turn: every request whose handler reaches reserveJoin in this turn joins the group.
      setImmediate(() => void this.#drain());
    }
  }

  async #drain(): Promise<void> {
    try {
      let busyRounds = 0;
      while (this.#queue.length > 0) {
        const group = this.#queue.splice(0, this.#maxGroupSize);
        const run = await this.#commitGroup(group);
        if (run.busy) {
          // Back to the head of the queue, in order; whatever arrives meanwhile joins it on the next try.
          this.#queue.unshift(...group);
          this.#options.onBusy?.();
          busyRounds++;
          await new Promise<void>((resolve) => (busyRounds === 1 ? setImmediate(resolve) : setTimeout(resolve, 1)));
        } else {
          busyRounds = 0;
          // Reservations whose row another connection changed: decided again, on the new row, in the next group.
          this.#queue.unshift(...run.again);
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  async #commitGroup(group: readonly Pending[]): Promise<GroupRun> {
    for (let attempt = 1; ; attempt++) {
      let plans: Plan[];
      let results: readonly ItemResult[];
      try {
        const reservations = group.filter((p): p is PendingReservation => p.kind === 'reserve');
        const rows = reservations.length === 0 ? [] : await this.#writer.read(reservations.map((p) => [p.joinEui, p.devEui] as const));
        const items: GroupItem[] = [];
        plans = planGroup(group, rows, items);
        results = items.length === 0 ? [] : await this.#writer.commit(items);
      } catch (error) {
        if (isBusy(error) && performance.now() - group[0]!.since < this.#options.busyTimeoutMs) return { busy: true };
        if (!isBusy(error) && this.#options.classify(error) === 'retry' && attempt < this.#options.maxAttempts) {
          await backoff(attempt);
          continue;
        }
        const failure = storageFailure('sqlite', error, 'reserveJoin (group commit)');
        for (const p of group) p.reject(failure);
        return { busy: false, again: [] };
      }
      const again: Pending[] = [];
      const outcomes = group.map((p, i): Outcome | undefined => {
        const plan = plans[i]!;
        if ('done' in plan) return plan.done;
        const result = results[plan.item]!;
        if (result === 'conflict') {
          again.push(p);
          return undefined;
        }
        if (result !== 'written') return { error: storageFailure('sqlite', Object.assign(new Error(result.error.message), { code: result.error.code }), p.kind === 'reserve' ? 'reserveJoin' : 'appendAudit') };
        return { ok: plan.committed };
      });
      this.#options.onGroupCommitted?.(group.length - again.length);
      group.forEach((p, i) => {
        const outcome = outcomes[i];
        if (outcome === undefined) return;
        if ('ok' in outcome) (p.resolve as (v: unknown) => void)(outcome.ok);
        else p.reject(outcome.error);
      });
      return { busy: false, again };
    }
  }
}
