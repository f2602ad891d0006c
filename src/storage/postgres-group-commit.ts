import pg from 'pg';
import type { Eui64 } from '../protocol/index.js';
import { type GroupItem, type Plan, type PendingReservation, type ReservationWrite, planGroup, refusedOnSeen, withSeenAlone } from './group-plan.js';
import { commitOnSeen } from './postgres-seen-write.js';
import { auditArrays, sessionArrays } from './postgres-write-arrays.js';
import { backoff, storageFailure, type ErrorClass } from './kysely-storage.js';
import type { GroupCommitObserver, JoinDecision, JoinRow, JoinState, ReserveJoinResult } from './storage.js';

/*
 * Group commit for reserveJoin on PostgreSQL (docs/storage.md, "Group commit (PostgreSQL)").
 *
 * One transaction per reservation cost five round trips (BEGIN, lock, read, write, COMMIT) and a WAL flush each.
 * Here the reservations that arrive in one turn of the event loop, and those that queue while a group is in flight,
 * share one transaction on one pooled connection, in a constant number of statements whatever the group's size:
 *
 * 1. BEGIN; lock the group's device rows `FOR UPDATE` in one statement ordered by dev_eui. Every locker of several
 *    devices (groups of other Joinkeep instances, commissioning) takes them in that order, so two of them never wait
 *    for each other in a cycle; the per-reservation path locks one device only.
 * 2. read the (DevEUI, JoinEUI) states in a separate statement, after the locks: under READ COMMITTED a statement
 *    started after the lock was granted sees what the previous holder committed (as in kysely-storage.ts).
 * 3. decide here, in arrival order, with planGroup: a later reservation of a device decides on the row as the
 *    earlier ones of the group leave it, so the DevNonce and JoinNonce rules hold inside a group as across groups.
 * 4. write every successful decision in one statement over arrays (`unnest`): JoinNonce counters, join states,
 *    sessions, pruning beyond sessionLimit, audit events; then COMMIT.
 * - every outcome — success, refusal or error — is delivered only after COMMIT returned (synchronous_commit=on, so
 *   after the WAL flush). A refusal may depend on an earlier reservation of the same group.
 * - a deadlock or serialization failure runs the group again (`decide` is pure). Any other error the server reports
 *   (a constraint violation, a trigger's exception) rolled back the whole group; each of its reservations is then
 *   committed alone through the per-reservation path, so only the one that caused it fails. A connection failure (no
 *   server error, or SQLSTATE class 08, 53, 57, 58) fails the whole group without that fallback: each reservation
 *   alone would meet the same fault.
 * - up to `maxGroupsInFlight` groups run at once, on different connections, over disjoint devices: a device with a
 *   reservation in a group in flight waits for the next group, so this process keeps arrival order per device.
 */

export interface PostgresGroupCommitOptions {
  /** Most reservations in one transaction; default 128. */
  readonly maxGroupSize?: number | undefined;
  /** Groups committing at once, each on its own connection; default 2. */
  readonly maxGroupsInFlight?: number | undefined;
  readonly classify: (error: unknown) => ErrorClass;
  readonly maxAttempts: number;
  /** Commits one reservation in a transaction of its own: the fallback when a group fails. */
  readonly alone: (p: PendingReservation) => Promise<ReserveJoinResult<unknown>>;
  /** Observes each committed group's size (tests). */
  readonly onGroupCommitted?: ((size: number) => void) | undefined;
  /**
   * Connections whose transactions are REPEATABLE READ: reservations that brought the state they saw are written there
   * in one statement (postgres-seen-write.ts). Without it, every reservation takes the locked path.
   */
  readonly seenPool?: pg.Pool | undefined;
  /** Observes each reservation written on the state its caller saw (`seen`), and each one that had to be decided again (tests). */
  readonly onSeen?: ((outcome: 'written' | 'decided again') => void) | undefined;
}

/** `seconds`: from taking a pooled connection to COMMIT returned. */
type GroupRun = { readonly committed: readonly Plan[]; readonly seconds: number } | { readonly fallback: true } | { readonly failed: unknown };

const wroteSomething = (plans: readonly (Plan | undefined)[]): boolean => plans.some((plan) => plan !== undefined && 'item' in plan);

export class PostgresGroupCommit {
  readonly #pool: pg.Pool;
  readonly #options: PostgresGroupCommitOptions;
  readonly #maxGroupSize: number;
  readonly #maxInFlight: number;
  #queue: PendingReservation[] = [];
  /** Devices with a reservation in a group in flight: their next reservations wait for a later group. */
  readonly #busy = new Set<string>();
  #inFlight = 0;
  #scheduled = false;
  #idle: (() => void)[] = [];
  #durableWrites: GroupCommitObserver | undefined;

  constructor(pool: pg.Pool, options: PostgresGroupCommitOptions) {
    this.#pool = pool;
    this.#options = options;
    this.#maxGroupSize = options.maxGroupSize ?? 128;
    this.#maxInFlight = options.maxGroupsInFlight ?? 2;
  }

  /** Told each group that wrote something: its size and its transaction's time, COMMIT included (metrics). */
  observeDurableWrites(observer: GroupCommitObserver): void {
    this.#durableWrites = observer;
  }

  /** `seen`: the device's state as the caller read it; the group may decide on it and write it in one statement. */
  reserve<R>(devEui: Eui64, joinEui: Eui64, decide: (current: JoinState) => JoinDecision<R>, sessionLimit: number, seen?: JoinRow): Promise<ReserveJoinResult<R>> {
    return new Promise<ReserveJoinResult<R>>((resolve, reject) => {
      this.#queue.push({ kind: 'reserve', devEui, joinEui, decide, sessionLimit, seen, since: performance.now(), resolve: resolve as PendingReservation['resolve'], reject });
      this.#schedule();
    });
  }

  /** Resolves once nothing is queued or in flight (close() waits for it). */
  whenIdle(): Promise<void> {
    if (this.#queue.length === 0 && this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    // After the current turn: every request whose handler reaches reserveJoin in this turn joins the group.
    setImmediate(() => {
      this.#scheduled = false;
      this.#start();
    });
  }

  #start(): void {
    while (this.#inFlight < this.#maxInFlight) {
      const group = this.#take();
      if (group.length === 0) break;
      this.#inFlight++;
      for (const p of group) this.#busy.add(p.devEui);
      void this.#run(group).finally(() => {
        for (const p of group) this.#busy.delete(p.devEui);
        this.#inFlight--;
        if (this.#queue.length > 0) this.#schedule();
        else if (this.#inFlight === 0) for (const resolve of this.#idle.splice(0)) resolve();
      });
    }
  }

  /** The next group: queued reservations in arrival order, skipping devices busy in a group in flight. */
  #take(): PendingReservation[] {
    const group: PendingReservation[] = [];
    const rest: PendingReservation[] = [];
    for (const p of this.#queue) (group.length < this.#maxGroupSize && !this.#busy.has(p.devEui) ? group : rest).push(p);
    this.#queue = rest;
    return group;
  }

  /**
   * The reservations decided on the state they saw are written in one statement; those whose state had changed, the
   * refusals to confirm and the reservations without `seen` then go through the locked transaction, in arrival order.
   */
  async #run(whole: readonly PendingReservation[]): Promise<void> {
    const seenPool = this.#options.seenPool;
    const group = withSeenAlone(whole);
    const onSeen = group.filter((p) => p.seen !== undefined);
    if (seenPool === undefined || onSeen.length === 0) return this.#runLocked(group.map(unseen));
    const started = performance.now();
    const run = await commitOnSeen(seenPool, onSeen);
    const seconds = (performance.now() - started) / 1000;
    const delivered = new Set<PendingReservation>();
    if ('failed' in run) for (const _ of onSeen) this.#options.onSeen?.('decided again');
    else {
      run.plans.forEach((plan, i) => {
        const p = onSeen[i]!;
        if (plan === undefined || refusedOnSeen(p, plan)) return this.#options.onSeen?.('decided again');
        delivered.add(p);
        if ('item' in plan) this.#options.onSeen?.('written');
        deliver(p, plan);
      });
      if (delivered.size > 0) this.#options.onGroupCommitted?.(delivered.size);
      if (delivered.size > 0 && wroteSomething(run.plans)) this.#durableWrites?.(delivered.size, seconds);
    }
    const rest = group.filter((p) => !delivered.has(p)).map(unseen);
    if (rest.length > 0) await this.#runLocked(rest);
  }

  /** Locks, reads and writes the group in one transaction; retried, or each reservation alone, when it fails. */
  async #runLocked(group: readonly PendingReservation[]): Promise<void> {
    let run: GroupRun;
    for (let attempt = 1; ; attempt++) {
      run = await this.#commit(group);
      if (!('failed' in run) || this.#options.classify(run.failed) !== 'retry') break;
      if (attempt >= this.#options.maxAttempts) {
        run = { fallback: true };
        break;
      }
      await backoff(attempt);
    }
    if ('failed' in run) {
      const failure = storageFailure('postgres', run.failed, 'reserveJoin (group commit)');
      for (const p of group) p.reject(failure);
      return;
    }
    if ('fallback' in run) {
      await this.#alone(group);
      return;
    }
    this.#options.onGroupCommitted?.(group.length);
    if (wroteSomething(run.committed)) this.#durableWrites?.(group.length, run.seconds);
    run.committed.forEach((plan, i) => deliver(group[i]!, plan));
  }

  /** One transaction for the whole group; nothing is delivered here. */
  async #commit(group: readonly PendingReservation[]): Promise<GroupRun> {
    const started = performance.now();
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      return { failed: error };
    }
    try {
      await client.query('begin');
      const rows = await lockAndRead(client, group);
      const items: GroupItem[] = [];
      const plans = planGroup(group, rows, items);
      // Only reservations were queued, so every item is a reservation's write.
      const writes = items.filter((item): item is ReservationWrite => item.kind === 'reserve');
      if (writes.length > 0) await write(client, writes);
      await client.query('commit');
      client.release();
      return { committed: plans, seconds: (performance.now() - started) / 1000 };
    } catch (error) {
      // After a failed COMMIT the server has already ended the transaction; ROLLBACK then only warns.
      await client.query('rollback').then(
        () => client.release(),
        (rollbackError: unknown) => client.release(rollbackError instanceof Error ? rollbackError : true),
      );
      if (this.#options.classify(error) === 'retry' || !(error instanceof pg.DatabaseError) || /^(08|53|57|58)/.test(error.code ?? '')) return { failed: error };
      return { fallback: true };
    }
  }

  /** The fallback: each reservation in its own transaction; in arrival order per device, devices side by side. */
  async #alone(group: readonly PendingReservation[]): Promise<void> {
    const byDevice = new Map<string, PendingReservation[]>();
    for (const p of group) {
      const list = byDevice.get(p.devEui);
      if (list === undefined) byDevice.set(p.devEui, [p]);
      else list.push(p);
    }
    await Promise.all(
      [...byDevice.values()].map(async (list) => {
        for (const p of list) await this.#options.alone(p).then(p.resolve, p.reject);
      }),
    );
  }
}

function deliver(p: PendingReservation, plan: Plan): void {
  if (!('done' in plan)) p.resolve(plan.committed!);
  else if ('ok' in plan.done) p.resolve(plan.done.ok!);
  else p.reject(plan.done.error);
}

/** The reservation as one to decide on a locked read. */
const unseen = (p: PendingReservation): PendingReservation => (p.seen === undefined ? p : { ...p, seen: undefined });

/**
 * Steps 1 and 2: locks the group's devices in dev_eui order, then reads their join states. Returns one row per
 * reservation, in order (undefined: no such device), as planGroup takes them.
 */
async function lockAndRead(client: pg.PoolClient, group: readonly PendingReservation[]): Promise<(JoinRow | undefined)[]> {
  const devEuis = [...new Set(group.map((p) => p.devEui))];
  const locked = await client.query<{ dev_eui: string; last_join_nonce: number }>({
    name: 'joinkeep_group_lock',
    // ORDER BY below the locking clause: PostgreSQL locks the rows as the sort returns them, in dev_eui order.
    text: 'select dev_eui, last_join_nonce from devices where dev_eui = any($1::text[]) order by dev_eui for update',
    values: [devEuis],
  });
  const joinNonces = new Map(locked.rows.map((r) => [r.dev_eui, r.last_join_nonce]));
  const keys = [...new Map(group.filter((p) => joinNonces.has(p.devEui)).map((p) => [`${p.devEui}/${p.joinEui}`, p])).values()];
  const states = new Map<string, { last_dev_nonce: number | null; used_dev_nonces: string; last_rj_count1: number | null }>();
  if (keys.length > 0) {
    const read = await client.query<{ dev_eui: string; join_eui: string; last_dev_nonce: number | null; used_dev_nonces: string; last_rj_count1: number | null }>({
      name: 'joinkeep_group_read',
      // LATERAL … LIMIT 1: a primary-key probe per key; as a plain join the planner may hash the whole table.
      text: `select s.dev_eui, s.join_eui, s.last_dev_nonce, s.used_dev_nonces, s.last_rj_count1
        from unnest($1::text[], $2::text[]) as k(dev_eui, join_eui)
          cross join lateral (select * from device_join_state s where s.dev_eui = k.dev_eui and s.join_eui = k.join_eui limit 1) s`,
      values: [keys.map((p) => p.devEui), keys.map((p) => p.joinEui)],
    });
    for (const r of read.rows) states.set(`${r.dev_eui}/${r.join_eui}`, r);
  }
  return group.map((p): JoinRow | undefined => {
    const joinNonce = joinNonces.get(p.devEui);
    if (joinNonce === undefined) return undefined;
    const state = states.get(`${p.devEui}/${p.joinEui}`);
    return state === undefined
      ? { last_join_nonce: joinNonce, state_dev_eui: null, last_dev_nonce: null, used_dev_nonces: null, last_rj_count1: null }
      : { last_join_nonce: joinNonce, state_dev_eui: p.devEui, ...state };
  });
}

/**
 * Step 4: every write of the group in one statement (data-modifying CTEs over arrays). A device's counter and a
 * (DevEUI, JoinEUI) state are written once, as the group's last reservation of it left them; sessions and audit
 * events are inserted in arrival order (so `seq` and `id` follow it).
 *
 * Pruning: one reservation at a time, each keeping its device's `sessionLimit` most recent sessions, always leaves a
 * device's M most recent sessions, M = min over its k reservations j = 1…k of (L_j + k − j); M = L when the limits
 * are equal. All parts of one statement share its snapshot, so the CTE sees only the sessions older than the group
 * and keeps max(0, M − k) of them; only when a group holds more than M reservations of one device do some of its
 * own new sessions go too, in a second statement that can see them.
 */
async function write(client: pg.PoolClient, items: readonly ReservationWrite[]): Promise<void> {
  const joinNonces = new Map<string, number>();
  const states = new Map<string, ReservationWrite['state']>();
  const limits = new Map<string, number[]>();
  for (const w of items) {
    joinNonces.set(w.devEui, w.joinNonce);
    states.set(`${w.devEui}/${w.joinEui}`, w.state);
    const l = limits.get(w.devEui);
    if (l === undefined) limits.set(w.devEui, [w.sessionLimit]);
    else l.push(w.sessionLimit);
  }
  const devices = [...joinNonces.keys()];
  const keep = devices.map((d) => {
    const l = limits.get(d)!;
    return { k: l.length, m: Math.min(...l.map((limit, j) => limit + l.length - (j + 1))) };
  });
  const st = [...states.values()];
  const audits = items.flatMap((w) => (w.audit === undefined ? [] : [w.audit]));
  await client.query({
    name: 'joinkeep_group_write',
    text: `with nonce as (
        update devices d set last_join_nonce = v.join_nonce
        from unnest($1::text[], $2::int[]) as v(dev_eui, join_nonce) where d.dev_eui = v.dev_eui),
      state as (
        insert into device_join_state (dev_eui, join_eui, last_dev_nonce, used_dev_nonces, last_rj_count1, updated_at)
        select * from unnest($3::text[], $4::text[], $5::int[], $6::text[], $7::int[], $8::int8[])
        on conflict (dev_eui, join_eui) do update set last_dev_nonce = excluded.last_dev_nonce,
          used_dev_nonces = excluded.used_dev_nonces, last_rj_count1 = excluded.last_rj_count1, updated_at = excluded.updated_at),
      session as (
        insert into sessions (dev_eui, session_key_id, join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at)
        select dev_eui, session_key_id, join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at
        from unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::int[], $14::int[], $15::text[], $16::text[], $17::int8[])
          with ordinality as n(dev_eui, session_key_id, join_eui, scheme, join_nonce, dev_nonce, net_id, dev_addr, created_at, ord)
        order by ord),
      pruned as (
        delete from sessions where seq in (
          select old.seq from unnest($1::text[], $18::int[]) as k(dev_eui, keep)
          cross join lateral (select s.seq from sessions s where s.dev_eui = k.dev_eui order by s.seq desc offset k.keep) old))
      insert into audit_events (at, actor, action, subject, outcome, details, organisation)
      select at, actor, action, subject, outcome, details, organisation
      from unnest($19::int8[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[], $25::text[])
        with ordinality as a(at, actor, action, subject, outcome, details, organisation, ord)
      order by ord`,
    values: [
      devices,
      devices.map((d) => joinNonces.get(d)),
      st.map((s) => s.dev_eui),
      st.map((s) => s.join_eui),
      st.map((s) => s.last_dev_nonce ?? null),
      st.map((s) => s.used_dev_nonces ?? '[]'),
      st.map((s) => s.last_rj_count1 ?? null),
      st.map((s) => s.updated_at),
      ...sessionArrays(items),
      keep.map(({ k, m }) => Math.max(0, m - k)),
      ...auditArrays(audits),
    ],
  });
  const beyond = devices.flatMap((d, i) => (keep[i]!.k > keep[i]!.m ? [{ d, m: keep[i]!.m }] : []));
  if (beyond.length > 0) {
    await client.query({
      name: 'joinkeep_group_prune',
      text: `delete from sessions where seq in (
          select x.seq from unnest($1::text[], $2::int[]) as k(dev_eui, keep)
          cross join lateral (select s.seq from sessions s where s.dev_eui = k.dev_eui order by s.seq desc offset k.keep) x)`,
      values: [beyond.map((b) => b.d), beyond.map((b) => b.m)],
    });
  }
}
