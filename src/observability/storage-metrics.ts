import { Counter, Gauge, type Registry } from 'prom-client';

/** The SQLite checkpointer's running totals, as SqliteStorage.checkpointTotals reports them. */
export interface CheckpointTotalsSample {
  readonly passive: number;
  readonly restart: number;
  readonly failures: number;
  readonly seconds: number;
  readonly walFrames: number;
}

/** The part of a storage the metrics read (structurally: observability does not import storage). */
export interface StorageMetricsSource {
  checkpointTotals(): CheckpointTotalsSample;
}

const reportsCheckpoints = (storage: object): storage is StorageMetricsSource =>
  typeof (storage as Partial<StorageMetricsSource>).checkpointTotals === 'function';

/*
 * Storage metrics, read from the storage's own running totals when Prometheus scrapes. On SQLite: the checkpointer
 * thread's work (docs/storage.md, "Checkpoints"). A WAL that keeps growing (joinkeep_sqlite_wal_frames rising, RESTARTs
 * counting up) means checkpoints do not keep up with the writer; failures mean they cannot run at all.
 */
export function registerStorageMetrics(registry: Registry, storage: object): void {
  // Nothing is registered for a storage without a checkpointer (PostgreSQL).
  if (!reportsCheckpoints(storage)) return;
  const read = (): CheckpointTotalsSample => storage.checkpointTotals();
  new Counter({
    name: 'joinkeep_sqlite_checkpoints_total',
    help: 'SQLite checkpoints run by the checkpointer thread: passive (every few milliseconds while the writer commits), restart (the WAL had reached its bound)',
    labelNames: ['mode'],
    registers: [registry],
    collect() {
      const t = read();
      this.reset();
      this.inc({ mode: 'passive' }, t.passive);
      this.inc({ mode: 'restart' }, t.restart);
    },
  });
  const total = (name: string, help: string, value: (t: CheckpointTotalsSample) => number): void => {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(value(read()));
      },
    });
  };
  total('joinkeep_sqlite_checkpoint_failures_total', 'SQLite checkpoints that failed (tried again on the next tick; the WAL keeps the frames)', (t) => t.failures);
  total('joinkeep_sqlite_checkpoint_seconds_total', 'Time the checkpointer thread spent checkpointing', (t) => t.seconds);
  new Gauge({
    name: 'joinkeep_sqlite_wal_frames',
    help: 'Frames in the SQLite WAL after the last checkpoint of this process',
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.set(read().walFrames);
    },
  });
}
