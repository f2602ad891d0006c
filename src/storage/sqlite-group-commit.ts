import type { Eui64 } from '../protocol/index.js';
import { type Outcome, type Pending, type PendingReservation, type Plan, planGroup, refusedOnSeen, withSeenAlone } from './group-plan.js';
import { backoff, storageFailure, type ErrorClass } from './kysely-storage.js';
import type { auditToRow } from './records.js';
import type { SqliteWriter } from './sqlite-writer.js';
import type { GroupItem, ItemResult } from './sqlite-writer-protocol.js';
import type { GroupCommitObserver, JoinDecision, JoinRow, JoinState, ReserveJoinResult } from './storage.js';

/*
 * Group commit for reserveJoin on SQLite (docs/storage.md, "Group commit").
 *
 * With synchronous=FULL every COMMIT fsyncs the WAL: one commit per join made the fsync the largest single cost of a
 * join. Here the reservations that arrive in one turn of the event loop (and those that queue up while a group
 * commits) share one transaction, written by the SQLite writer thread (sqlite-writer-thread.ts) on its own
 * connection, so neither the statements nor the COMMIT's fsync run on the event loop:
 *
 * 1. read: the writer thread reads each reservation's row (JoinNonce counter and DevNonce state). It handles requests
 *    in order and the read is posted after the previous group's commit, so the rows include every earlier write of
 *    this process.
 * 2. decide, here on the main thread, in arrival order: `decide`, then checkDecision. A later reservation of the same
 *    device in the group decides on the row as the earlier one leaves it, so the DevNonce and JoinNonce rules hold
 *    inside a group exactly as they do across groups.
 * 3. commit: one BEGIN IMMEDIATE … COMMIT in the writer thread; each reservation written only if its row still equals
 *    the row it was decided on. Another process on the same file (serve --processes N) may have written the device
 *    between 1 and 3: that reservation is not written ("conflict") and goes back to the queue to be decided again on
 *    the new row, as if it had arrived later. If a write fails, the writer rolls the group back and writes it again
 *    with each reservation in its own SAVEPOINT: that reservation changes nothing and fails, the others are unaffected.
 * - every outcome — success, refusal or error — is delivered only after COMMIT returned, i.e. after the fsync.
 *   A refusal may depend on an earlier reservation of the same group, so it waits for the commit too.
 * - if BEGIN or COMMIT fails, nothing of the group was written and every reservation in it fails with the
 *   StorageError.
 * - another process holding the write lock must not stall this one: the writer thread waits for it at most 2 ms
 *   (off the event loop), then reports SQLITE_BUSY; the group goes back to the head of the queue (requests arriving
 *   meanwhile join it), and it is tried again after the event loop has run (setImmediate, then every millisecond)
 *   until `busyTimeoutMs` after its oldest request; then the group fails, as a blocking busy_timeout would have. Nothing of the group was written, and `decide` is pure, so deciding again is safe.
 * - audit events appended outside a join (refusals) ride in the next group: no transaction and no fsync of their
 *   own, and no blocking wait for the write lock either.
 */

/** SQLite's answer when the write lock is taken (SQLITE_BUSY and its extended codes). */
const isBusy = (error: unknown): boolean => String((error as { code?: unknown } | null)?.code ?? '').startsWith('SQLITE_BUSY');

export interface GroupCommitOptions {
  /** Most reservations in one transaction; more wait for the next group. */
  readonly maxGroupSize?: number;
  /** The group size the commit starts from and returns to when no backlog builds up (see #takeGroup). */
  readonly minGroupSize?: number;
  readonly classify: (error: unknown) => ErrorClass;
  readonly maxAttempts: number;
  /** Observes each committed group's size (tests). */
  readonly onGroupCommitted?: ((size: number) => void) | undefined;
  /** How long a request may wait for another process's write lock. */
  readonly busyTimeoutMs: number;
  /** Observes each time a group found the write lock taken and was put back (tests). */
  readonly onBusy?: (() => void) | undefined;
}

/** A group read and decided, its commit posted to the writer thread and not yet answered. */
interface InFlight {
  readonly group: readonly Pending[];
  readonly plans: readonly Plan[];
  /** `seconds`: from handing the writes to the writer thread to its reply after COMMIT; absent when nothing was written. */
  readonly written: Promise<{ readonly results: readonly ItemResult[]; readonly seconds?: number } | { readonly failed: unknown }>;
}

/** How a group's commit ended: `requeue` goes back to the head of the queue, in order, to be decided again. */
type Finished = { readonly requeue: readonly Pending[]; readonly busy: boolean; readonly retry: boolean };

export class SqliteGroupCommit {
  readonly #options: GroupCommitOptions;
  readonly #maxGroupSize: number;
  readonly #minGroupSize: number;
  #groupSize: number;
  readonly #writer: SqliteWriter;
  #queue: Pending[] = [];
  #draining = false;
  #durableWrites: GroupCommitObserver | undefined;

  constructor(writer: SqliteWriter, options: GroupCommitOptions) {
    this.#options = options;
    this.#maxGroupSize = options.maxGroupSize ?? 256;
    this.#minGroupSize = Math.min(options.minGroupSize ?? 16, this.#maxGroupSize);
    this.#groupSize = this.#minGroupSize;
    this.#writer = writer;
  }

  /** Told each group that wrote something: its size and the writer thread's round trip, COMMIT included (metrics). */
  observeDurableWrites(observer: GroupCommitObserver): void {
    this.#durableWrites = observer;
  }

  /** `seen`: the device's state as the caller read it; the group decides on it instead of reading the row. */
  reserve<R>(devEui: Eui64, joinEui: Eui64, decide: (current: JoinState) => JoinDecision<R>, sessionLimit: number, seen?: JoinRow): Promise<ReserveJoinResult<R>> {
    return new Promise<ReserveJoinResult<R>>((resolve, reject) => {
      this.#enqueue({ kind: 'reserve', devEui, joinEui, decide, sessionLimit, seen, since: performance.now(), resolve: resolve as PendingReservation['resolve'], reject });
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

  /*
   * Pipelined: the next group's read is posted while the previous group's commit is in the writer thread. The writer
   * handles requests in order, so that read runs after the commit and its rows include it; the writer goes from one
   * group's COMMIT straight to the next group's read instead of waiting for the event loop between them.
   * When a commit ends in anything but a clean write (the lock was taken, a retryable error, a conflict), the group
   * read after it is not committed: both go back to the head of the queue in arrival order and are decided again,
   * so one process never reorders the reservations of a device.
   * A next group that needs no read (every reservation brought its `seen` state) gains nothing from being taken early:
   * it waits for the commit in flight first, so everything that arrived during that commit joins it. Taken early, it
   * would hold only what arrived before, and the rest would wait for a third commit (measured at 1,800 joins/s on the
   * 2-CPU VM: p50 wait 2.4–2.7 ms for commits of 1.3 ms).
   */
  async #drain(): Promise<void> {
    try {
      let busyRounds = 0;
      let retryRounds = 0;
      let inFlight: InFlight | undefined;
      /** Whether a finished group must go back to the queue (the lock was taken, a retryable error, a conflict). */
      const unsettled = (f: Finished): boolean => f.requeue.length > 0 || f.busy || f.retry;
      /** Puts `f`'s reservations, then `after`, back at the head of the queue and waits as its rounds tell. */
      const backOff = async (f: Finished, after: readonly Pending[] = []): Promise<void> => {
        this.#queue.unshift(...f.requeue, ...after);
        busyRounds = f.busy ? busyRounds + 1 : 0;
        retryRounds = f.retry ? retryRounds + 1 : 0;
        await this.#pause(busyRounds, retryRounds);
      };
      while (this.#queue.length > 0 || inFlight !== undefined) {
        if (inFlight !== undefined && !this.#nextGroupReads()) {
          const finished = this.#finish(inFlight, await inFlight.written, retryRounds);
          inFlight = undefined;
          if (unsettled(finished)) await backOff(finished);
          continue;
        }
        const next = this.#queue.length > 0 ? this.#takeGroup() : undefined;
        const prepared = next === undefined ? undefined : await this.#prepare(next);
        if (inFlight !== undefined) {
          const finished = this.#finish(inFlight, await inFlight.written, retryRounds);
          inFlight = undefined;
          if (unsettled(finished)) {
            await backOff(finished, next);
            continue;
          }
        }
        if (next === undefined || prepared === undefined) continue;
        if ('failed' in prepared) {
          await backOff(this.#failed(next, prepared.failed, retryRounds));
          continue;
        }
        busyRounds = 0;
        retryRounds = 0;
        const posted = performance.now();
        const written = prepared.items.length === 0
          ? Promise.resolve({ results: [] as const })
          : this.#writer.commit(prepared.items).then((results) => ({ results, seconds: (performance.now() - posted) / 1000 }), (failed: unknown) => ({ failed }));
        inFlight = { group: next, plans: prepared.plans, written };
      }
    } finally {
      this.#draining = false;
    }
  }

  /*
   * Small groups keep the event loop and the writer thread busy at the same time: the writer returns a few answers
   * while the event loop still has requests to parse, instead of all of them at once after a long commit (measured on
   * the 2-CPU VM, 64 connections: 16 per group answered about 10 % more joins per second than 256). A slow disk makes
   * each commit expensive, though, so when requests are left waiting after a group was taken, the next group may be
   * twice as large (up to maxGroupSize); once the queue empties it shrinks back by halves.
   */
  #takeGroup(): Pending[] {
    const group = withSeenAlone(this.#queue.splice(0, this.#groupSize));
    this.#groupSize = this.#queue.length > 0 ? Math.min(this.#groupSize * 2, this.#maxGroupSize) : Math.max(this.#groupSize >> 1, this.#minGroupSize);
    return group;
  }

  /** Whether the group #takeGroup would take now has a reservation whose row the writer must read first. */
  #nextGroupReads(): boolean {
    const end = Math.min(this.#queue.length, this.#groupSize);
    for (let i = 0; i < end; i++) {
      const p = this.#queue[i]!;
      if (p.kind === 'reserve' && p.seen === undefined) return true;
    }
    return false;
  }

  /** Reads the group's rows (after every commit posted before) and decides each request on them. */
  async #prepare(group: readonly Pending[]): Promise<{ readonly plans: Plan[]; readonly items: GroupItem[] } | { readonly failed: unknown }> {
    try {
      // A reservation that brought the state it was read with decides on it; the writer reads the others' rows.
      const reservations = group.filter((p): p is PendingReservation => p.kind === 'reserve');
      const unseen = reservations.filter((p) => p.seen === undefined);
      const read = unseen.length === 0 ? [] : await this.#writer.read(unseen.map((p) => [p.joinEui, p.devEui] as const));
      let next = 0;
      const rows = reservations.map((p) => p.seen ?? read[next++]);
      const items: GroupItem[] = [];
      return { plans: planGroup(group, rows, items), items };
    } catch (failed) {
      return { failed };
    }
  }

  /** Delivers every outcome of a committed group; a group whose read or commit failed is retried or failed. */
  #finish(inFlight: InFlight, written: Awaited<InFlight['written']>, retryRounds: number): Finished {
    if ('failed' in written) return this.#failed(inFlight.group, written.failed, retryRounds);
    const { group, plans } = inFlight;
    const again: Pending[] = [];
    const outcomes = group.map((p, i): Outcome | undefined => {
      const plan = plans[i]!;
      if (refusedOnSeen(p, plan)) {
        again.push({ ...p, seen: undefined } as Pending);
        return undefined;
      }
      if ('done' in plan) return plan.done;
      const result = written.results[plan.item]!;
      if (result === 'conflict') {
        // Decided again on the row as it is now: read by the writer, not the state the caller saw.
        again.push(p.kind === 'reserve' ? { ...p, seen: undefined } : p);
        return undefined;
      }
      if (result !== 'written') return { error: storageFailure('sqlite', Object.assign(new Error(result.error.message), { code: result.error.code }), p.kind === 'reserve' ? 'reserveJoin' : 'appendAudit') };
      return { ok: plan.committed };
    });
    const delivered = group.length - again.length;
    this.#options.onGroupCommitted?.(delivered);
    // A commit whose every reservation met a conflict wrote nothing: not a durable write of anything.
    if (written.seconds !== undefined && delivered > 0) this.#durableWrites?.(delivered, written.seconds);
    group.forEach((p, i) => {
      const outcome = outcomes[i];
      if (outcome === undefined) return;
      if ('ok' in outcome) (p.resolve as (v: unknown) => void)(outcome.ok);
      else p.reject(outcome.error);
    });
    // Reservations whose row another connection changed: decided again, on the new row.
    return { requeue: again, busy: false, retry: false };
  }

  /** Nothing of the group was written: back to the queue while the lock is taken or the error is retryable, else fail. */
  #failed(group: readonly Pending[], error: unknown, retryRounds: number): Finished {
    if (isBusy(error) && performance.now() - group[0]!.since < this.#options.busyTimeoutMs) {
      this.#options.onBusy?.();
      return { requeue: group, busy: true, retry: false };
    }
    if (!isBusy(error) && this.#options.classify(error) === 'retry' && retryRounds + 1 < this.#options.maxAttempts) {
      return { requeue: group, busy: false, retry: true };
    }
    const failure = storageFailure('sqlite', error, 'reserveJoin (group commit)');
    for (const p of group) p.reject(failure);
    return { requeue: [], busy: false, retry: false };
  }

  /** Before trying again: at once after the event loop ran, then every millisecond (lock taken); backoff (retryable). */
  async #pause(busyRounds: number, retryRounds: number): Promise<void> {
    if (retryRounds > 0) await backoff(retryRounds);
    else if (busyRounds > 0) await new Promise<void>((resolve) => (busyRounds === 1 ? setImmediate(resolve) : setTimeout(resolve, 1)));
  }
}
