import BetterSqlite3 from 'better-sqlite3';
import { closeSync, fchmodSync, openSync } from 'node:fs';
import { StorageError } from './errors.js';

/** How long a statement of the main connection waits for another connection's write lock before SQLITE_BUSY. */
export const SQLITE_BUSY_TIMEOUT_MS = 5000;

/**
 * Opens one connection to the database file at `path` (creating it with mode 0600 if needed) with the settings every
 * Joinkeep connection uses. Both the main connection and the writer thread's connection (sqlite-writer-thread.ts)
 * come from here, so they cannot disagree on durability.
 */
export function openSqliteConnection(path: string, busyTimeoutMs: number): BetterSqlite3.Database {
  let connection: BetterSqlite3.Database;
  try {
    createPrivateFile(path);
    connection = new BetterSqlite3(path, { timeout: busyTimeoutMs });
  } catch (error) {
    throw new StorageError('UNAVAILABLE', `cannot open SQLite database ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    configure(connection, path, busyTimeoutMs);
  } catch (error) {
    connection.close();
    if (error instanceof StorageError) throw error;
    throw new StorageError('UNAVAILABLE', `cannot configure SQLite database ${path}: ${(error as Error).message}`, { cause: error });
  }
  return connection;
}

/**
 * Durability: an answer must never leave before its JoinNonce is on disk, or a power cut could make us issue it
 * again. WAL with synchronous=FULL fsyncs the WAL on every commit (synchronous=NORMAL would only sync at
 * checkpoints and may lose the last commits on power loss). busy_timeout makes BEGIN IMMEDIATE wait for another
 * connection's write lock instead of failing at once. foreign_keys is off by default in SQLite and per connection.
 */
function configure(connection: BetterSqlite3.Database, path: string, busyTimeoutMs: number): void {
  connection.pragma(`busy_timeout = ${Math.trunc(busyTimeoutMs)}`);
  const journalMode = String(connection.pragma('journal_mode = WAL', { simple: true }));
  if (journalMode !== 'wal') {
    throw new StorageError('UNAVAILABLE', `SQLite database ${path} cannot use WAL (journal_mode is ${journalMode})`);
  }
  connection.pragma('synchronous = FULL');
  connection.pragma('foreign_keys = ON');
}

/**
 * Creates the database file readable by its owner only: it holds sealed keys, peers' token hashes and the
 * audit trail. SQLite gives the -wal and -shm files the database file's permissions. An existing file keeps
 * the permissions its operator gave it.
 */
function createPrivateFile(path: string): void {
  if (path === '' || path === ':memory:') {
    // The join path's writes run on a second connection in a writer thread: both must see one database file.
    throw new StorageError('UNAVAILABLE', 'SQLite storage needs a database file, not an in-memory database');
  }
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw error;
  }
  try {
    fchmodSync(fd, 0o600); // exact, whatever the umask
  } finally {
    closeSync(fd);
  }
}
