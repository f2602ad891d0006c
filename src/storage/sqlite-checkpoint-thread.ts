import { parentPort, workerData } from 'node:worker_threads';
import { openSqliteConnection } from './sqlite-connection.js';
import { type CheckpointerInit, type CheckpointerReport, CheckpointStats } from './sqlite-writer-protocol.js';

/*
 * The checkpointer (docs/storage.md, "Checkpoints"), started by the writer thread: copies the WAL back into the
 * database file from a connection of its own.
 *
 * SQLite checkpoints automatically on the connection whose COMMIT takes the WAL past 1,000 pages, inside that COMMIT.
 * On the writer thread that made one group in every few hundred wait for the checkpoint: on a fleet of a million
 * devices each join dirties pages spread over a gigabyte file, and the checkpoint that writes them back (and fsyncs the
 * database file) held that group's answers for tens of milliseconds. Here the writer's connection never checkpoints;
 * this thread runs PASSIVE checkpoints, which copy what readers allow and never block a writer, every `intervalMs`
 * when the writer committed since the last one.
 *
 * A PASSIVE checkpoint cannot always let the WAL start again from its beginning: that needs a moment with every frame
 * copied and no transaction started since, which a writer that never pauses does not leave. When the WAL has grown to
 * `restartFrames` frames anyway, a RESTART checkpoint waits for the writer between two groups, copies the rest and
 * makes the next COMMIT write from the start of the file: one short stall, only under sustained load, instead of a WAL
 * that grows without bound.
 */

const port = parentPort;
if (port === null) throw new Error('sqlite-checkpoint-thread runs as a worker thread');
const init = workerData as CheckpointerInit;
// RESTART waits for the write lock through SQLite's busy handler (sleeps of 1, 2, 5, 10 … ms); a group holds the lock for
// about a millisecond. The writer keeps committing while RESTART waits, so the WAL may pass restartFrames by what it
// writes meanwhile; a RESTART that gives up is tried again on the next tick.
const RESTART_BUSY_TIMEOUT_MS = 100;
const connection = openSqliteConnection(init.path, RESTART_BUSY_TIMEOUT_MS);
connection.pragma('wal_autocheckpoint = 0');
const commits = new Int32Array(init.commits);
const stats = new CheckpointStats(init.checkpointStats);
let checkpointedAt = -1;

interface CheckpointRow {
  readonly busy: number;
  readonly log: number;
  readonly checkpointed: number;
}

function checkpoint(mode: 'PASSIVE' | 'RESTART'): CheckpointRow {
  return (connection.pragma(`wal_checkpoint(${mode})`) as CheckpointRow[])[0]!;
}

setInterval(() => {
  const seen = Atomics.load(commits, 0);
  if (seen === checkpointedAt) return;
  const started = performance.now();
  try {
    let row = checkpoint('PASSIVE');
    if (row.log > 0) stats.add('passive', 1);
    if (row.log >= init.restartFrames) {
      row = checkpoint('RESTART');
      stats.add('restart', 1);
    }
    stats.setWalFrames(Math.max(row.log, 0));
    // Not everything copied (a reader's snapshot, another connection's checkpoint): the next tick tries again.
    if (row.busy === 0 && row.checkpointed >= row.log) checkpointedAt = seen;
  } catch (error) {
    stats.add('failures', 1);
    // Nothing is lost: the WAL keeps the frames, and the next tick tries again. The writer thread keeps the last error.
    port.postMessage({ type: 'failed', message: error instanceof Error ? error.message : String(error) } satisfies CheckpointerReport);
  } finally {
    stats.add('microseconds', (performance.now() - started) * 1000);
  }
}, init.intervalMs);
