import { Worker } from 'node:worker_threads';
import { StorageError } from './errors.js';
import {
  type CheckpointSettings,
  CheckpointStats,
  type CheckpointTotals,
  type GroupItem,
  type ItemResult,
  type JoinRow,
  type WriterInit,
  type WriterReply,
  type WriterSettings,
  WriterThreadError,
} from './sqlite-writer-protocol.js';

/**
 * A checkpoint every 25 ms while the writer commits. Small, frequent checkpoints disturb the commits' fsyncs least:
 * on a million-device fleet at 300 joins/s, join p99 was 10.6–13.5 ms with 25 ms, 13.9–16.3 ms with 50 ms and
 * 18.7–19.8 ms with 200 ms (docs/performance.md). 10,000 frames (about 40 MB of WAL) before a RESTART.
 */
export const DEFAULT_CHECKPOINTS: CheckpointSettings = { intervalMs: 25, restartFrames: 10_000 };

type Pending = { readonly resolve: (reply: WriterReply) => void; readonly reject: (error: unknown) => void };

/**
 * The main thread's handle on the SQLite writer thread (sqlite-writer-thread.ts). Started on first use, so after the
 * main connection created and migrated the database; started again on the next use if it ever ends. It keeps the
 * process alive only while a request is outstanding: an idle storage that nobody closed does not hold the process.
 */
export class SqliteWriter {
  readonly #init: WriterInit;
  #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;

  readonly #checkpointStats = new CheckpointStats();

  constructor(path: string, checkpoints: CheckpointSettings = DEFAULT_CHECKPOINTS) {
    this.#init = { path, checkpoints, checkpointStats: this.#checkpointStats.buffer };
  }

  /** The checkpointer thread's running totals (every writer thread this process started). */
  checkpointTotals(): CheckpointTotals {
    return this.#checkpointStats.read();
  }

  /** Each key's row, read after every earlier commit of this writer. */
  async read(keys: readonly (readonly [joinEui: string, devEui: string])[]): Promise<readonly (JoinRow | undefined)[]> {
    const reply = await this.#request({ op: 'read', keys });
    if (!('rows' in reply)) throw new Error('SQLite writer thread: unexpected reply to read');
    return reply.rows;
  }

  /** Writes the group in one transaction; resolves after its COMMIT (and fsync). Rejects if nothing was written. */
  async commit(items: readonly GroupItem[]): Promise<readonly ItemResult[]> {
    const reply = await this.#request({ op: 'commit', items });
    if (!('results' in reply)) throw new Error('SQLite writer thread: unexpected reply to commit');
    return reply.results;
  }

  /** Starts the thread, unless it is running, and waits until it has prepared its statements. */
  async start(): Promise<void> {
    // Any request does both; settings is the one without effects.
    await this.settings();
  }

  async settings(): Promise<WriterSettings> {
    const reply = await this.#request({ op: 'settings' });
    if (!('settings' in reply)) throw new Error('SQLite writer thread: unexpected reply to settings');
    return reply.settings;
  }

  /** Ends the thread once its outstanding requests are answered. */
  async close(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    if (worker === undefined) return;
    while (this.#pending.size > 0 && this.#worker === worker) {
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (this.#pending.size === 0 || this.#worker !== worker) resolve();
          else setTimeout(check, 1);
        };
        check();
      });
    }
    this.#worker = undefined;
    await worker.terminate();
  }

  #request(body: { op: 'read'; keys: readonly (readonly [string, string])[] } | { op: 'commit'; items: readonly GroupItem[] } | { op: 'settings' }): Promise<WriterReply> {
    if (this.#closed) return Promise.reject(new StorageError('UNAVAILABLE', 'SQLite storage is closed'));
    const worker = (this.#worker ??= this.#start());
    const id = this.#nextId++;
    return new Promise<WriterReply>((resolve, reject) => {
      this.#pending.set(id, {
        resolve: (reply) => ('error' in reply ? reject(new WriterThreadError(reply.error)) : resolve(reply)),
        reject,
      });
      if (this.#pending.size === 1) worker.ref();
      worker.postMessage({ id, ...body });
    });
  }

  #start(): Worker {
    const worker = new Worker(new URL('./sqlite-writer-thread.js', import.meta.url), { workerData: this.#init });
    worker.unref();
    let failure: string | undefined;
    worker.on('message', (reply: WriterReply) => {
      const pending = this.#pending.get(reply.id);
      if (pending === undefined) return;
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) worker.unref();
      pending.resolve(reply);
    });
    worker.on('error', (error) => (failure ??= error instanceof Error ? error.message : String(error)));
    worker.once('exit', (code) => {
      if (this.#worker === worker) this.#worker = undefined;
      if (this.#closed && this.#pending.size === 0) return;
      // Whatever it was doing may or may not have committed: its callers get an error, as for a failed COMMIT.
      const error = new StorageError('UNAVAILABLE', `the SQLite writer thread ended (${failure ?? `exit code ${code}`})`);
      for (const p of this.#pending.values()) p.reject(error);
      this.#pending.clear();
    });
    return worker;
  }
}
