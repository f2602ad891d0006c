/*
 * Messages between the main thread (sqlite-writer.ts) and the SQLite writer thread (sqlite-writer-thread.ts).
 * Plain data only: they cross the thread boundary by structured clone.
 */

import type { GroupItem } from './group-plan.js';
import type { JoinRow } from './storage.js';

// The rows of a group live with the group planning, shared by every storage, and a device's join-state row with the
// storage contract; the writer thread takes them as they are.
export type { AuditRow, AuditWrite, GroupItem, ReservationWrite } from './group-plan.js';
export type { JoinRow } from './storage.js';

/**
 * What became of one item of a committed group: written; not written because the row changed since it was read
 * (another connection wrote it: decide again on the new state); or not written because its statements failed.
 */
export type ItemResult = 'written' | 'conflict' | { readonly error: WireError };

export interface WireError {
  readonly message: string;
  /** SQLite's error code (SQLITE_BUSY, SQLITE_CONSTRAINT_…), when it is one. */
  readonly code: string | undefined;
}

export interface WriterSettings {
  readonly journalMode: string;
  readonly synchronous: number;
  readonly foreignKeys: boolean;
  /** The writer connection's wal_autocheckpoint: 0 while the checkpointer thread runs (sqlite-checkpoint-thread.ts). */
  readonly walAutocheckpoint: number;
  /** The checkpointer's last error, if its last attempt failed. */
  readonly checkpointError: string | undefined;
}

export type WriterRequest =
  | { readonly id: number; readonly op: 'read'; readonly keys: readonly (readonly [joinEui: string, devEui: string])[] }
  | { readonly id: number; readonly op: 'commit'; readonly items: readonly GroupItem[] }
  | { readonly id: number; readonly op: 'settings' };

export type WriterReply =
  | { readonly id: number; readonly rows: readonly (JoinRow | undefined)[] }
  | { readonly id: number; readonly results: readonly ItemResult[] }
  | { readonly id: number; readonly settings: WriterSettings }
  | { readonly id: number; readonly error: WireError };

export interface WriterInit {
  readonly path: string;
  readonly checkpoints: CheckpointSettings;
  /** CheckpointStats.buffer: written by the checkpointer thread, read by the main thread at each metrics scrape. */
  readonly checkpointStats: SharedArrayBuffer;
}

/** When the checkpointer thread copies the WAL back into the database file (docs/storage.md, "Checkpoints"). */
export interface CheckpointSettings {
  /** How often it looks for commits to checkpoint, ms. */
  readonly intervalMs: number;
  /** A WAL this long (frames, one per page written) is restarted even if the writer has to pause for it. */
  readonly restartFrames: number;
}

/** Given by the writer thread to the checkpointer thread. */
export interface CheckpointerInit extends CheckpointSettings {
  readonly path: string;
  /** One Int32: how many groups the writer committed; the checkpointer skips its tick when that has not changed. */
  readonly commits: SharedArrayBuffer;
  readonly checkpointStats: SharedArrayBuffer;
}

/** Running totals of the checkpointer thread, shared with the main thread (one writer: the checkpointer). */
export interface CheckpointTotals {
  /** PASSIVE checkpoints that had frames to copy. */
  readonly passive: number;
  /** RESTART checkpoints (the WAL had reached restartFrames). */
  readonly restart: number;
  readonly failures: number;
  /** Time spent checkpointing. */
  readonly seconds: number;
  /** Frames in the WAL after the last checkpoint (0 once it restarted). */
  readonly walFrames: number;
}

const TOTALS = ['passive', 'restart', 'failures', 'microseconds', 'walFrames'] as const;
type Slot = (typeof TOTALS)[number];

/** CheckpointTotals over a SharedArrayBuffer of 64-bit counters, updated and read with Atomics. */
export class CheckpointStats {
  readonly buffer: SharedArrayBuffer;
  readonly #slots: BigInt64Array;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(TOTALS.length * 8)) {
    this.buffer = buffer;
    this.#slots = new BigInt64Array(buffer);
  }

  add(slot: Exclude<Slot, 'walFrames'>, n: number): void {
    Atomics.add(this.#slots, TOTALS.indexOf(slot), BigInt(Math.round(n)));
  }

  setWalFrames(n: number): void {
    Atomics.store(this.#slots, TOTALS.indexOf('walFrames'), BigInt(n));
  }

  read(): CheckpointTotals {
    const get = (slot: Slot): number => Number(Atomics.load(this.#slots, TOTALS.indexOf(slot)));
    return { passive: get('passive'), restart: get('restart'), failures: get('failures'), seconds: get('microseconds') / 1e6, walFrames: get('walFrames') };
  }
}

export type CheckpointerReport = { readonly type: 'failed'; readonly message: string };

export const toWireError = (error: unknown): WireError => ({
  message: error instanceof Error ? error.message : String(error),
  code: typeof (error as { code?: unknown } | null)?.code === 'string' ? ((error as { code: string }).code) : undefined,
});

/** Rebuilt on the main thread so that callers can classify it by `code` as they would a driver error. */
export class WriterThreadError extends Error {
  readonly code: string | undefined;
  constructor(wire: WireError) {
    super(wire.message);
    this.name = 'WriterThreadError';
    this.code = wire.code;
  }
}
