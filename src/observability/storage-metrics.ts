import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

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

/** A storage whose join path commits in groups (both SQLite and PostgreSQL), structurally. */
export interface GroupCommitSource {
  observeGroupCommits(observer: (size: number, seconds: number) => void): void;
}

const reportsGroupCommits = (storage: object): storage is GroupCommitSource =>
  typeof (storage as Partial<GroupCommitSource>).observeGroupCommits === 'function';

/*
 * The join path's durable writes: every Join-accept waits for its group's COMMIT, so this histogram is the part of
 * joinkeep_backend_request_duration_seconds that the disk (or PostgreSQL and its synchronous replicas) decides.
 * Observed once per group, not per join, so it costs the event loop nothing measurable.
 */
function registerGroupCommitMetrics(registry: Registry, storage: GroupCommitSource): void {
  const seconds = new Histogram({
    name: 'joinkeep_storage_group_commit_seconds',
    help: 'Durable writes of the join path (group commit), from handing a group to the database to its COMMIT returned: SQLite through the writer thread with its fsync, PostgreSQL from taking a pooled connection',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  const size = new Histogram({
    name: 'joinkeep_storage_group_commit_size',
    help: 'Reservations and audit events delivered per group commit that wrote something',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [registry],
  });
  storage.observeGroupCommits((n, s) => {
    seconds.observe(s);
    size.observe(n);
  });
}

/*
 * Storage metrics. The group commit histograms (both storages) are observed as each group commits. On SQLite, the
 * checkpointer thread's work (docs/storage.md, "Checkpoints") is read from its running totals when Prometheus scrapes:
 * a WAL that keeps growing (joinkeep_sqlite_wal_frames rising, RESTARTs counting up) means checkpoints do not keep up
 * with the writer; failures mean they cannot run at all.
 */
export function registerStorageMetrics(registry: Registry, storage: object): void {
  if (reportsGroupCommits(storage)) registerGroupCommitMetrics(registry, storage);
  // The checkpointer's metrics only for a storage that has one (SQLite).
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
