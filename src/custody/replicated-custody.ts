import { randomBytes } from 'node:crypto';
import {
  type CompletedJoin,
  type CustodyMemberState,
  type CustodyMemberStatus,
  type CustodyStatus,
  type DerivedImport,
  type ExportedKey,
  type HsmCounters,
  type JoinAcceptSeal,
  type JsonWebKeyRsaPublic,
  type KeyCustody,
  type KeyDestination,
  type KeyHandle,
  type KeyInfo,
  type KeyRef,
  type KeyUsage,
  type OaepHash,
  type ReceivingKeyInfo,
  type SealedImport,
  type SessionKeyRequest,
  receivingKeyHandle,
} from './custody.js';
import { CustodyError } from './errors.js';

/*
 * One KeyCustody over a pool of members holding the same keys (two or more HSMs for high availability).
 *
 * - Every key is on every member: imports, KEK additions and deletions run on all members and need all of them
 *   in service. A write that fails on one member is undone on the others, so the members never drift apart through
 *   Joinkeep. (A member that is down cannot receive a key later: root keys and KEKs never leave an HSM, so there is
 *   nothing to copy to it. Writes wait for the pool to be whole; joins do not.)
 * - Operations that use keys (MICs, Join-accept encryption, derive-and-wrap, look-ups) go to the member in service
 *   with the fewest operations in flight. When a member fails one — a token error, no answer within the operation
 *   timeout, or a key it should hold but does not while another member has it — that member leaves service at once
 *   and the operation runs again on the next member: the caller sees an answer, not the failure.
 * - A health check probes each member in service every `healthIntervalMs`. A member out of service is closed and
 *   opened afresh (new sessions and login) on each check; it returns to service when it answers and holds every key
 *   the members in service hold ("inconsistent" until then, reported with the missing handles).
 *
 * - A receiving key (an RSA key pair) is the one key made on one member and copied to the others: each member must
 *   be able to open batches sealed to it, and an HSM cannot generate the same key pair twice. See createReceivingKey.
 *
 * Nothing here is specific to PKCS#11: a member is any KeyCustody that can be opened again (and, for receiving keys
 * on a pool of two or more, that implements ReceivingKeyReplication).
 */

/**
 * What a pool needs of its members to hold one receiving key on each (createReceivingKey): the first member makes
 * the key and returns its private key wrapped (RFC 5649) under a one-time transport key the pool passes to every
 * member; the others store a copy from that. Each member keeps its copy non-extractable and destroys the transport
 * key before answering.
 */
export interface ReceivingKeyReplication {
  createReplicableReceivingKey(transportKey: Uint8Array): Promise<{ info: ReceivingKeyInfo; wrapped: Buffer }>;
  importReceivingReplica(info: ReceivingKeyInfo, wrapped: Uint8Array, transportKey: Uint8Array): Promise<void>;
}

export interface CustodyMemberSource {
  readonly name: string;
  /** Opens the member afresh: at start and on every attempt to readmit it. */
  open(): Promise<KeyCustody>;
}

export type ReplicaEvent =
  | { readonly kind: 'member-down'; readonly member: string; readonly reason: string }
  | { readonly kind: 'member-inconsistent'; readonly member: string; readonly reason: string }
  | { readonly kind: 'member-readmitted'; readonly member: string }
  /** handle: the key removed again (the first, for a batch); count: how many, for a batch of more than one. */
  | { readonly kind: 'write-undone'; readonly member: string; readonly handle: KeyHandle; readonly count?: number; readonly reason: string };

export interface ReplicatedCustodyOptions {
  /** How often members are probed and failed members reopened (default 2000 ms). */
  readonly healthIntervalMs?: number | undefined;
  /** A member that has not answered a key operation within this time is taken out of service (default 1000 ms). */
  readonly operationTimeoutMs?: number | undefined;
  /** State changes, for the operator's log. */
  readonly onEvent?: ((event: ReplicaEvent) => void) | undefined;
}

export const DEFAULT_HEALTH_INTERVAL_MS = 2000;
export const DEFAULT_OPERATION_TIMEOUT_MS = 1000;

/** What the health check MACs: a constant that is not a LoRaWAN frame (a LoRaWAN MIC input starts with an MHDR ≠ 0xFF). */
const HEALTH_MESSAGE = Buffer.concat([Buffer.from([0xff]), Buffer.from('joinkeep health check')]);

/** Refusals about the request itself: every member would answer the same, so they are not retried. */
const REQUEST_ERRORS = new Set(['INVALID_KEY', 'CLEAR_EXPORT_REFUSED', 'UNWRAP_FAILED', 'KEY_EXISTS', 'KEK_NOT_TRUSTED', 'MECHANISM_UNSUPPORTED', 'EXPORT_REFUSED']);
/** A key a member does not hold: the request's fault only if no member holds it. */
const NOT_FOUND = new Set(['KEY_NOT_FOUND', 'KEK_NOT_FOUND']);

interface Member {
  readonly name: string;
  readonly source: CustodyMemberSource;
  custody: KeyCustody | undefined;
  state: CustodyMemberState;
  since: Date;
  inFlight: number;
  operations: number;
  failures: number;
  readmissions: number;
  lastError: string | undefined;
  /** Set while the health check works on this member, so checks never overlap. */
  checking: boolean;
}

export class ReplicatedKeyCustody implements KeyCustody {
  readonly kind: KeyCustody['kind'];
  readonly #members: readonly Member[];
  readonly #timeoutMs: number;
  readonly #onEvent: (event: ReplicaEvent) => void;
  readonly #timer: NodeJS.Timeout;
  readonly #readmitTimeoutMs: number;
  /** A root key every member holds, for the health check's MIC (any will do; none yet in an empty pool). */
  #sampleRoot: KeyHandle | undefined;
  /** HSM counters of member instances closed for readmission, so the pool's totals only grow. */
  #retiredCounters: HsmCounters = { calls: {}, sessionObjectsCreated: 0, tokenObjectsCreated: 0, objectsDestroyed: 0 };
  #closed: Promise<void> | undefined;

  private constructor(kind: KeyCustody['kind'], members: readonly Member[], options: ReplicatedCustodyOptions) {
    this.kind = kind;
    this.#members = members;
    this.#timeoutMs = options.operationTimeoutMs ?? DEFAULT_OPERATION_TIMEOUT_MS;
    // Reopening lists the member's keys: allow it longer than one operation.
    this.#readmitTimeoutMs = Math.max(10 * this.#timeoutMs, 10_000);
    this.#onEvent = options.onEvent ?? (() => undefined);
    this.#timer = setInterval(() => void this.checkHealth(), options.healthIntervalMs ?? DEFAULT_HEALTH_INTERVAL_MS);
    this.#timer.unref();
  }

  /**
   * Opens every member. Members that fail to open start out of service and are retried by the health check;
   * at least one must open (TOKEN_UNAVAILABLE naming each failure otherwise). Members that lack keys another
   * member holds start "inconsistent".
   */
  static async open(kind: KeyCustody['kind'], sources: readonly CustodyMemberSource[], options: ReplicatedCustodyOptions = {}): Promise<ReplicatedKeyCustody> {
    if (sources.length === 0) throw new CustodyError('TOKEN_UNAVAILABLE', 'no custody member is configured');
    const names = new Set(sources.map((s) => s.name));
    if (names.size !== sources.length) throw new CustodyError('TOKEN_UNAVAILABLE', 'two custody members have the same name');
    const opened = await Promise.allSettled(sources.map((s) => s.open()));
    const now = new Date();
    const members: Member[] = sources.map((source, i) => {
      const result = opened[i]!;
      const up = result.status === 'fulfilled';
      return {
        name: source.name,
        source,
        custody: up ? result.value : undefined,
        state: up ? 'up' : 'down',
        since: now,
        inFlight: 0,
        operations: 0,
        failures: 0,
        readmissions: 0,
        lastError: up ? undefined : describe(result.reason),
        checking: false,
      };
    });
    if (!members.some((m) => m.state === 'up')) {
      if (opened.length === 1 && opened[0]!.status === 'rejected') throw opened[0]!.reason;
      throw new CustodyError('TOKEN_UNAVAILABLE', `no custody member could be opened: ${members.map((m) => `${m.name}: ${m.lastError}`).join('; ')}`);
    }
    const pool = new ReplicatedKeyCustody(kind, members, options);
    for (const m of members) if (m.state === 'down') pool.#onEvent({ kind: 'member-down', member: m.name, reason: m.lastError ?? 'did not open' });
    try {
      await pool.#checkConsistencyAtOpen();
    } catch (error) {
      await pool.close();
      throw error;
    }
    return pool;
  }

  // --- key operations: one member, failing over ---------------------------------------------------------------

  verifyMic(key: KeyRef, message: Uint8Array, mic: Uint8Array): Promise<boolean> {
    return this.#any((c) => c.verifyMic(key, message, mic));
  }

  computeMic(key: KeyRef, message: Uint8Array): Promise<Buffer> {
    return this.#any((c) => c.computeMic(key, message));
  }

  encryptJoinAccept(key: KeyRef, plaintext: Uint8Array): Promise<Buffer> {
    return this.#any((c) => c.encryptJoinAccept(key, plaintext));
  }

  deriveAndExport(root: KeyHandle, requests: readonly { readonly block: Uint8Array; readonly to: KeyDestination }[]): Promise<ExportedKey[]> {
    return this.#any((c) => c.deriveAndExport(root, requests));
  }

  completeJoin(accept: JoinAcceptSeal, keys: readonly SessionKeyRequest[]): Promise<CompletedJoin> {
    return this.#any((c) => c.completeJoin(accept, keys));
  }

  /** True when a member in service holds the key (each member holds every key). */
  async hasKey(handle: KeyHandle): Promise<boolean> {
    // A "false" is checked on the other members too: a member that lost its keys must not make a device unknown.
    return this.#any(async (c) => {
      if (await c.hasKey(handle)) return true;
      throw new CustodyError('KEY_NOT_FOUND', `no key named ${handle}`);
    }).catch((error: unknown) => {
      if (error instanceof CustodyError && error.code === 'KEY_NOT_FOUND') return false;
      throw error;
    });
  }

  hasKek(label: string): Promise<boolean> {
    return this.hasKey(`kek/${label}`);
  }

  /** Every key held by a member in service, once, with the members that hold it as its location. */
  async listKeys(): Promise<KeyInfo[]> {
    const byHandle = new Map<KeyHandle, { info: KeyInfo; holders: string[] }>();
    for (const m of this.#inService()) {
      for (const info of await this.#on(m, (c) => c.listKeys())) {
        const entry = byHandle.get(info.handle);
        if (entry === undefined) byHandle.set(info.handle, { info, holders: [m.name] });
        else entry.holders.push(m.name);
      }
    }
    const members = this.#members.length;
    if (members === 1) return [...byHandle.values()].map(({ info }) => info);
    return [...byHandle.values()].map(({ info, holders }) => ({
      ...info,
      location: `${this.kind === 'pkcs11' ? 'PKCS#11 tokens' : 'custody members'} ${holders.map((h) => `"${h}"`).join(', ')} (${holders.length} of ${members})`,
    }));
  }

  // --- writes: every member ----------------------------------------------------------------------------------

  async importWrapped(handle: KeyHandle, usage: KeyUsage, wrapped: Uint8Array, unwrapWithKekLabel: string): Promise<void> {
    await this.#all(handle, (c) => c.importWrapped(handle, usage, wrapped, unwrapWithKekLabel));
    if (usage === 'root') this.#sampleRoot ??= handle;
  }

  importKek(label: string, key: Uint8Array): Promise<void> {
    return this.#all(`kek/${label}`, (c) => c.importKek(label, key));
  }

  async deleteKey(handle: KeyHandle): Promise<void> {
    const members = this.#requireWhole(`delete ${handle}`);
    if (this.#sampleRoot === handle) this.#sampleRoot = undefined;
    const results = await Promise.allSettled(members.map((m) => this.#on(m, (c) => c.deleteKey(handle))));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [{ member: members[i]!, error: r.reason as unknown }] : []));
    // A member that does not hold the key has nothing to delete; only when none holds it is that the caller's error.
    const real = failed.filter((f) => !(f.error instanceof CustodyError && NOT_FOUND.has(f.error.code)));
    if (real.length === 0) {
      if (failed.length === members.length) throw failed[0]!.error;
      return;
    }
    for (const f of real) if (isMemberFailure(f.error)) this.#takeOut(f.member, describe(f.error));
    const first = real[0]!;
    throw new CustodyError(
      'TOKEN_UNAVAILABLE',
      `${handle} was deleted from ${members.length - real.length} of ${members.length} custody members; member "${first.member.name}" failed (${describe(first.error)}): delete it again when every member is in service`,
    );
  }

  async deleteKeys(handles: readonly KeyHandle[]): Promise<void> {
    if (handles.length === 0) return;
    const members = this.#requireWhole(`delete ${handles.length} key(s)`);
    if (this.#sampleRoot !== undefined && handles.includes(this.#sampleRoot)) this.#sampleRoot = undefined;
    // Handles not held are ignored by every member, so any failure here is the member's.
    const results = await Promise.allSettled(members.map((m) => this.#on(m, (c) => c.deleteKeys(handles))));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [{ member: members[i]!, error: r.reason as unknown }] : []));
    if (failed.length === 0) return;
    for (const f of failed) if (isMemberFailure(f.error)) this.#takeOut(f.member, describe(f.error));
    const first = failed[0]!;
    throw new CustodyError(
      'TOKEN_UNAVAILABLE',
      `${handles.length} key(s) were deleted from ${members.length - failed.length} of ${members.length} custody members; member "${first.member.name}" failed (${describe(first.error)}): delete them again when every member is in service`,
    );
  }

  // --- sealed batches ----------------------------------------------------------------------------------------

  /**
   * On a pool of two or more: a one-time AES-256 transport key (random, in this process's memory only until every
   * member has its copy; zeroised then) goes to every member; the first member generates the key pair with an
   * extractable private key as session objects, wraps the private key under the transport key (CKM_AES_KEY_WRAP_PAD)
   * and keeps a non-extractable token copy of its own; every other member unwraps the same blob into its own
   * non-extractable copy; each member destroys the transport key (and the first its extractable original) before
   * answering. All or nothing: when a member fails, the copies made are deleted. docs/security.md describes the window.
   */
  async createReceivingKey(): Promise<ReceivingKeyInfo> {
    const members = this.#requireWhole('create a receiving key');
    if (members.length === 1) return this.#on(members[0]!, (c) => c.createReceivingKey());
    const replicable = members.map((m) => ({ member: m, custody: m.custody as KeyCustody & Partial<ReceivingKeyReplication> }));
    const unable = replicable.find((r) => typeof r.custody.createReplicableReceivingKey !== 'function' || typeof r.custody.importReceivingReplica !== 'function');
    if (unable !== undefined) throw new CustodyError('MECHANISM_UNSUPPORTED', `custody member "${unable.member.name}" cannot hold a copy of a receiving key`);
    const [first, ...others] = members as [Member, ...Member[]];
    const transportKey = randomBytes(32);
    try {
      const { info, wrapped } = await this.#on(first, (c) => (c as KeyCustody & ReceivingKeyReplication).createReplicableReceivingKey(transportKey)).catch((error: unknown) => {
        // Nothing was kept on that member (it undoes its own part); a member failure takes it out, as for any write.
        if (isMemberFailure(error)) this.#takeOut(first, describe(error));
        throw error;
      });
      try {
        await this.#allMembers(
          `store receiving key ${info.kid}`,
          [receivingKeyHandle(info.kid)],
          (c) => (c as KeyCustody & ReceivingKeyReplication).importReceivingReplica(info, wrapped, transportKey),
          { members: others, alsoUndoOn: [first] },
        );
      } finally {
        wrapped.fill(0);
      }
      return info;
    } finally {
      transportKey.fill(0);
    }
  }

  listReceivingKeys(): Promise<ReceivingKeyInfo[]> {
    return this.#any((c) => c.listReceivingKeys());
  }

  /** On every member, each opening the batch key with its own copy of the receiving key; all or nothing across members. */
  async importSealed(input: SealedImport): Promise<void> {
    const handles = input.keys.map((k) => k.handle);
    await this.#allMembers(`import ${handles.length} sealed key(s)`, handles, (c) => c.importSealed(input));
    this.#sampleRoot ??= input.keys.find((k) => k.usage === 'root')?.handle;
  }

  async importDerived(input: DerivedImport): Promise<void> {
    const handles = input.keys.map((k) => k.handle);
    await this.#allMembers(`derive ${handles.length} root key(s)`, handles, (c) => c.importDerived(input));
    this.#sampleRoot ??= handles[0];
  }

  exportSealed(recipient: JsonWebKeyRsaPublic, oaep: OaepHash, handles: readonly KeyHandle[]): Promise<{ encryptedBatchKey: Buffer; wrapped: Buffer[] }> {
    return this.#any((c) => c.exportSealed(recipient, oaep, handles));
  }

  // --- health ------------------------------------------------------------------------------------------------

  status(): CustodyStatus {
    return {
      members: this.#members.map(
        (m): CustodyMemberStatus => ({
          name: m.name,
          state: m.state,
          since: m.since,
          operations: m.operations,
          failures: m.failures,
          readmissions: m.readmissions,
          lastError: m.lastError,
        }),
      ),
    };
  }

  /** The members' HSM work so far, summed; members reopened since start count with their earlier instances. */
  hsmCounters(): HsmCounters {
    let total = this.#retiredCounters;
    for (const m of this.#members) {
      const counters = m.custody?.hsmCounters?.();
      if (counters !== undefined) total = addCounters(total, counters);
    }
    return total;
  }

  /** Fails unless some member is in service and answers its probe. */
  async probe(): Promise<void> {
    await this.#any(async (c) => {
      await c.probe?.();
    });
  }

  /**
   * One round of the health check (run by the timer; callable by tests and operators): probes each member in
   * service, and tries to readmit each member out of service. Resolves when the round is over.
   */
  async checkHealth(): Promise<void> {
    if (this.#closed !== undefined) return;
    await Promise.all(
      this.#members.map(async (m) => {
        if (m.checking) return;
        m.checking = true;
        try {
          if (m.state === 'up') await this.#probeInService(m);
          else await this.#tryReadmit(m);
        } finally {
          m.checking = false;
        }
      }),
    );
  }

  close(): Promise<void> {
    return (this.#closed ??= (async () => {
      clearInterval(this.#timer);
      await Promise.allSettled(this.#members.map((m) => m.custody?.close()));
      for (const m of this.#members) m.custody = undefined;
    })());
  }

  // --- internals ---------------------------------------------------------------------------------------------

  #inService(): Member[] {
    return this.#members.filter(inService);
  }

  /** Runs `operation` on one member after another, least busy first, until one answers. */
  async #any<T>(operation: (custody: KeyCustody) => Promise<T>): Promise<T> {
    this.#assertOpen();
    const tried = new Set<Member>();
    const lacking: { member: Member; error: CustodyError }[] = [];
    let failure: unknown;
    for (;;) {
      const member = this.#leastBusy(tried);
      if (member === undefined) break;
      tried.add(member);
      try {
        const value = await this.#on(member, operation, this.#timeoutMs);
        // A member that said it lacks a key another member holds has lost keys: out of service until it has them.
        for (const l of lacking) {
          l.member.failures++;
          this.#takeOut(l.member, `${l.error.message}, which member "${member.name}" holds`, 'inconsistent');
        }
        return value;
      } catch (error) {
        if (!(error instanceof CustodyError)) throw error;
        if (REQUEST_ERRORS.has(error.code)) throw error;
        if (NOT_FOUND.has(error.code)) {
          lacking.push({ member, error });
          continue;
        }
        // OVERLOADED: this member is saturated, not broken; the next may have room.
        if (error.code !== 'OVERLOADED') this.#takeOut(member, describe(error));
        failure ??= error;
      }
    }
    // No member answered. If every member in service said the key is missing, it is missing.
    if (lacking.length > 0 && failure === undefined) throw lacking[0]!.error;
    if (failure instanceof CustodyError && failure.code === 'OVERLOADED') throw failure;
    const reasons = this.#members.map((m) => `${m.name}: ${m.state}${m.lastError ? ` (${m.lastError})` : ''}`).join('; ');
    throw new CustodyError('TOKEN_UNAVAILABLE', `no custody member could run the operation: ${reasons}`);
  }

  #turn = 0;

  /** The member in service with the fewest operations in flight; ties go round the pool, so idle members share. */
  #leastBusy(tried: ReadonlySet<Member>): Member | undefined {
    let best: Member | undefined;
    const n = this.#members.length;
    const start = this.#turn++ % n;
    for (let i = 0; i < n; i++) {
      const m = this.#members[(start + i) % n]!;
      if (!inService(m) || tried.has(m)) continue;
      if (best === undefined || m.inFlight < best.inFlight) best = m;
    }
    return best;
  }

  /** Runs one operation on one member, counting it; with a timeout, a member that does not answer fails it. */
  async #on<T>(member: Member, operation: (custody: KeyCustody) => Promise<T>, timeoutMs?: number): Promise<T> {
    const custody = member.custody;
    if (custody === undefined) throw new CustodyError('TOKEN_UNAVAILABLE', `custody member "${member.name}" is out of service`);
    member.inFlight++;
    try {
      const work = operation(custody);
      const value = timeoutMs === undefined ? await work : await withTimeout(work, timeoutMs, `custody member "${member.name}" did not answer within ${timeoutMs} ms`);
      member.operations++;
      return value;
    } catch (error) {
      if (isMemberFailure(error)) member.failures++;
      throw error;
    } finally {
      member.inFlight--;
    }
  }

  /** Runs a write on every member; undoes it where it succeeded when it failed anywhere. */
  #all(handle: KeyHandle, write: (custody: KeyCustody) => Promise<void>): Promise<void> {
    return this.#allMembers(`store ${handle}`, [handle], write);
  }

  /**
   * Runs a write of `handles` on every member (or on `options.members`); when it fails anywhere, deletes `handles`
   * again where it succeeded (and on `options.alsoUndoOn`, members that did their part of the write earlier).
   */
  async #allMembers(
    what: string,
    handles: readonly KeyHandle[],
    write: (custody: KeyCustody) => Promise<void>,
    options: { readonly members?: readonly Member[]; readonly alsoUndoOn?: readonly Member[] } = {},
  ): Promise<void> {
    const members = options.members ?? this.#requireWhole(what);
    const results = await Promise.allSettled(members.map((m) => this.#on(m, write)));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [{ member: members[i]!, error: r.reason as unknown }] : []));
    if (failed.length === 0) return;
    const succeeded = [...(options.alsoUndoOn ?? []), ...members.filter((_, i) => results[i]!.status === 'fulfilled')];
    const first = failed[0]!;
    const label = handles.length === 1 ? handles[0]! : `${handles.length} keys (${handles.slice(0, 3).join(', ')}${handles.length > 3 ? ', …' : ''})`;
    if (succeeded.length === 0 && !failed.some((f) => isMemberFailure(f.error))) {
      // Every member refused the request itself (wrong KEK, key exists, …): the caller's error; nothing was stored.
      throw first.error;
    }
    for (const m of succeeded) {
      try {
        await this.#on(m, (c) => (handles.length === 1 ? c.deleteKey(handles[0]!) : c.deleteKeys(handles)));
        this.#onEvent({
          kind: 'write-undone',
          member: m.name,
          handle: handles[0] ?? '',
          ...(handles.length > 1 ? { count: handles.length } : {}),
          reason: `member "${first.member.name}" refused it: ${describe(first.error)}`,
        });
      } catch (error) {
        // The keys stay on this member only; readmission checks compare members, so the operator will see them.
        this.#takeOut(m, `could not undo a partial write of ${label}: ${describe(error)}`);
      }
    }
    for (const f of failed) {
      if (isMemberFailure(f.error)) this.#takeOut(f.member, describe(f.error));
      // It lacks a key the others hold: it has drifted, and serves nothing until it holds every key again.
      else if (f.error instanceof CustodyError && NOT_FOUND.has(f.error.code) && succeeded.length > 0) this.#takeOut(f.member, describe(f.error), 'inconsistent');
    }
    throw new CustodyError(
      'TOKEN_UNAVAILABLE',
      `${label} ${handles.length === 1 ? 'was' : 'were'} not stored: custody member "${first.member.name}" failed (${describe(first.error)}); every member must hold every key, so ${handles.length === 1 ? 'it was' : 'they were'} removed from the others`,
    );
  }

  /** The members for a write: all of them, each in service; otherwise TOKEN_UNAVAILABLE naming the others. */
  #requireWhole(what: string): Member[] {
    this.#assertOpen();
    const out = this.#members.filter((m) => !inService(m));
    if (out.length > 0) {
      const names = out.map((m) => `"${m.name}" (${m.state}${m.lastError ? `: ${m.lastError}` : ''})`).join(', ');
      throw new CustodyError('TOKEN_UNAVAILABLE', `cannot ${what} while custody member ${names} is out of service: every member must hold every key; retry when it is back`);
    }
    return [...this.#members];
  }

  /** Takes a member in service out; a member already out keeps the reason it left with. */
  #takeOut(member: Member, reason: string, state: CustodyMemberState = 'down'): void {
    if (member.state === 'up') this.#stillOut(member, state, reason);
  }

  /** Records why a member out of service stays out; an event only when the state or the reason changes. */
  #stillOut(member: Member, state: CustodyMemberState, reason: string): void {
    if (member.state === state && member.lastError === reason) return;
    if (member.state !== state) member.since = new Date();
    member.state = state;
    member.lastError = reason;
    this.#onEvent({ kind: state === 'inconsistent' ? 'member-inconsistent' : 'member-down', member: member.name, reason });
  }

  /**
   * The health check of a member: the custody's own probe (an HSM answers C_GetTokenInfo) and one MIC with a root
   * key the pool holds, because an HSM can answer its token info while its key operations stall. The MIC's result
   * is discarded; no key leaves.
   */
  async #check(custody: KeyCustody): Promise<void> {
    await custody.probe?.();
    const handle = this.#sampleRoot;
    if (handle === undefined) return;
    try {
      await custody.computeMic({ handle }, HEALTH_MESSAGE);
    } catch (error) {
      // The sample key was deleted (by another instance): pick another at the next listing. A member that lacks it
      // while others hold it is caught by the consistency check and by the operations themselves.
      if (error instanceof CustodyError && NOT_FOUND.has(error.code)) this.#sampleRoot = undefined;
      else throw error;
    }
  }

  async #probeInService(member: Member): Promise<void> {
    try {
      await this.#on(member, (c) => this.#check(c), this.#timeoutMs);
    } catch (error) {
      this.#takeOut(member, `health check failed: ${describe(error)}`);
    }
  }

  /**
   * Closes the member, opens it afresh, and returns it to service when it answers (within the readmission time)
   * and holds every key the members in service hold.
   */
  async #tryReadmit(member: Member): Promise<void> {
    const old = member.custody;
    member.custody = undefined;
    // Waits for the old member's in-flight operations (a stalled HSM's end when it answers or the grace is over).
    if (old !== undefined) {
      await old.close().catch(() => undefined);
      const counters = old.hsmCounters?.();
      if (counters !== undefined) this.#retiredCounters = addCounters(this.#retiredCounters, counters);
    }
    let custody: KeyCustody;
    try {
      custody = await member.source.open();
    } catch (error) {
      this.#stillOut(member, 'down', describe(error));
      return;
    }
    let missing: KeyHandle[];
    try {
      missing = await withTimeout(
        (async () => {
          await this.#check(custody);
          return this.#missingOn(custody, member);
        })(),
        this.#readmitTimeoutMs,
        `custody member "${member.name}" did not answer its health check within ${this.#readmitTimeoutMs} ms`,
      );
    } catch (error) {
      this.#stillOut(member, 'down', `health check failed: ${describe(error)}`);
      await custody.close().catch(() => undefined);
      return;
    }
    if (missing.length > 0) {
      this.#stillOut(member, 'inconsistent', `lacks ${missing.length} key(s) the members in service hold, e.g. ${missing.slice(0, 3).join(', ')}`);
      await custody.close().catch(() => undefined);
      return;
    }
    if (this.#closed !== undefined) {
      await custody.close();
      return;
    }
    member.custody = custody;
    member.state = 'up';
    member.since = new Date();
    member.readmissions++;
    member.lastError = undefined;
    this.#onEvent({ kind: 'member-readmitted', member: member.name });
  }

  /** Handles held by the members in service (other than `member`) that `custody` lacks. */
  async #missingOn(custody: KeyCustody, member: Member): Promise<KeyHandle[]> {
    const reference = this.#inService().filter((m) => m !== member);
    if (reference.length === 0) return [];
    const held = new Set((await custody.listKeys()).map((k) => k.handle));
    const expected = new Set<KeyHandle>();
    for (const m of reference) {
      for (const k of await this.#on(m, (c) => c.listKeys())) {
        expected.add(k.handle);
        if (k.usage === 'root') this.#sampleRoot ??= k.handle;
      }
    }
    return [...expected].filter((h) => !held.has(h));
  }

  /**
   * At open, members in service must hold the same keys. Those lacking keys that others hold are taken out
   * ("inconsistent"), unless that would leave none: then the member holding the most keys serves, and the others
   * are reported.
   */
  async #checkConsistencyAtOpen(): Promise<void> {
    const up = this.#inService();
    if (up.length < 2) return;
    const held = new Map<Member, Set<KeyHandle>>();
    for (const m of up) {
      const keys = await this.#on(m, (c) => c.listKeys());
      this.#sampleRoot ??= keys.find((k) => k.usage === 'root')?.handle;
      held.set(m, new Set(keys.map((k) => k.handle)));
    }
    const union = new Set<KeyHandle>();
    for (const set of held.values()) for (const h of set) union.add(h);
    const complete = up.filter((m) => held.get(m)!.size === union.size);
    const keep = complete.length > 0 ? new Set(complete) : new Set([up.reduce((a, b) => (held.get(b)!.size > held.get(a)!.size ? b : a))]);
    for (const m of up) {
      if (keep.has(m)) continue;
      const missing = [...union].filter((h) => !held.get(m)!.has(h));
      this.#takeOut(m, `lacks ${missing.length} key(s) other members hold, e.g. ${missing.slice(0, 3).join(', ')}`, 'inconsistent');
      await m.custody?.close();
      m.custody = undefined;
    }
  }

  #assertOpen(): void {
    if (this.#closed !== undefined) throw new CustodyError('TOKEN_UNAVAILABLE', 'the custody is closed');
  }
}

/** Up and open: the health check has not taken it out, and it is not being reopened. */
function inService(member: Member): boolean {
  return member.state === 'up' && member.custody !== undefined;
}

/** Errors that say the member could not do its part, as opposed to a refusal of the request. */
function isMemberFailure(error: unknown): boolean {
  return !(error instanceof CustodyError) || !(REQUEST_ERRORS.has(error.code) || NOT_FOUND.has(error.code));
}

function addCounters(a: HsmCounters, b: HsmCounters): HsmCounters {
  const calls: Record<string, number> = { ...a.calls };
  for (const [name, n] of Object.entries(b.calls)) calls[name] = (calls[name] ?? 0) + n;
  return {
    calls,
    sessionObjectsCreated: a.sessionObjectsCreated + b.sessionObjectsCreated,
    tokenObjectsCreated: a.tokenObjectsCreated + b.tokenObjectsCreated,
    objectsDestroyed: a.objectsDestroyed + b.objectsDestroyed,
  };
}

/** Resolves as `work`, or rejects with TOKEN_UNAVAILABLE after `ms` (the work itself is not cancelled). */
async function withTimeout<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CustodyError('TOKEN_UNAVAILABLE', message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(error: unknown): string {
  if (error instanceof CustodyError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}
