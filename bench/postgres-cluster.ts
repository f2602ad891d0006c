import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freeLoopbackPort } from '../sim/joinkeep-server.js';
import { assertLoopbackUrl } from './options.js';

/*
 * PostgreSQL for a benchmark run: a fresh database per configuration (dropped at the end), on a loopback cluster
 * given with --postgres-url, or else on a throwaway cluster started here the way scripts/test.sh starts one
 * (initdb + pg_ctl from /usr/lib/postgresql/<version>/bin or PATH, in a temporary directory, as the `postgres`
 * user when run as root, fsync on, listening on 127.0.0.1 only) and stopped on every exit path.
 */

export interface BenchPostgres {
  /** What the databases live on, for the report. */
  readonly description: string;
  createDatabase(): Promise<{ readonly url: string; drop(): Promise<void> }>;
  stop(): Promise<void>;
}

export type BenchPostgresOrSkip = BenchPostgres | { readonly skipped: string };

export async function benchPostgres(adminUrl: string | undefined, log: (line: string) => void): Promise<BenchPostgresOrSkip> {
  if (adminUrl !== undefined) {
    assertLoopbackUrl(adminUrl);
    return onCluster(adminUrl, `PostgreSQL at ${new URL(adminUrl).host} (--postgres-url)`, async () => undefined);
  }
  const bin = findPgBin();
  if (bin === undefined) return { skipped: 'PostgreSQL server binaries (initdb, pg_ctl, postgres) not found and no --postgres-url given (Debian: apt-get install postgresql)' };
  const root = process.getuid?.() === 0;
  let uid: number | undefined;
  if (root) {
    try {
      uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    } catch {
      return { skipped: 'running as root and there is no `postgres` user to own a throwaway cluster (initdb refuses root); give --postgres-url' };
    }
  }
  const runAs = (cmd: string, args: string[]): string[] => (root ? ['runuser', '-u', 'postgres', '--', cmd, ...args] : [cmd, ...args]);
  const exec = (cmd: string, args: string[]): void => {
    const [file, ...rest] = runAs(cmd, args);
    execFileSync(file!, rest, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  };
  const dir = mkdtempSync(join(tmpdir(), 'joinkeep-bench-pg-'));
  chmodSync(dir, 0o755);
  if (uid !== undefined) chownSync(dir, uid, -1);
  const data = join(dir, 'data');
  const pgCtl = join(bin, 'pg_ctl');
  let running = false;
  // Synchronous, so it also runs from an 'exit' handler (watchdog, signals, uncaught errors).
  const stopNow = (): void => {
    if (running) {
      running = false;
      try { exec(pgCtl, ['-D', data, '-m', 'immediate', '-w', 'stop']); } catch { /* already gone */ }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stopNow);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  try {
    log(`bench: starting a throwaway PostgreSQL cluster (${bin}) in ${dir}`);
    exec(join(bin, 'initdb'), ['-D', data, '--username=postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync']);
    let port: number | undefined;
    for (let attempt = 0; attempt < 3 && port === undefined; attempt++) {
      const p = await freeLoopbackPort();
      try {
        // fsync stays on (the default): durable commits are what is measured.
        exec(pgCtl, ['-D', data, '-l', join(dir, 'postgres.log'), '-w', '-t', '30', 'start', '-o', `-c listen_addresses=127.0.0.1 -p ${p} -k ${dir} -c max_connections=300`]);
        port = p;
      } catch { /* port taken meanwhile: try another */ }
    }
    if (port === undefined) throw new Error(`PostgreSQL did not start: ${tail(join(dir, 'postgres.log'))}`);
    running = true;
    const version = bin.startsWith('/usr/lib/postgresql/') ? ` ${bin.split('/').at(-2) ?? ''}` : '';
    return onCluster(`postgres://postgres@127.0.0.1:${port}/postgres`, `throwaway PostgreSQL${version} cluster on 127.0.0.1:${port} (fsync on)`, async () => {
      process.off('exit', stopNow);
      stopNow();
    });
  } catch (error) {
    stopNow();
    process.off('exit', stopNow);
    return { skipped: `could not start a throwaway PostgreSQL cluster: ${(error as Error).message.split('\n')[0]}` };
  }
}

function onCluster(adminUrl: string, description: string, stop: () => Promise<void>): BenchPostgres {
  const admin = async (sql: string): Promise<void> => {
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  return {
    description,
    async createDatabase() {
      const name = `joinkeep_bench_${process.pid}_${randomBytes(4).toString('hex')}`;
      await admin(`create database ${name}`);
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      return { url: url.toString(), drop: () => admin(`drop database if exists ${name} with (force)`) };
    },
    stop,
  };
}

function findPgBin(): string | undefined {
  const has = (dir: string): boolean => ['initdb', 'pg_ctl', 'postgres'].every((f) => existsSync(join(dir, f)));
  try {
    const versions = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (has(`/usr/lib/postgresql/${v}/bin`)) return `/usr/lib/postgresql/${v}/bin`;
  } catch { /* not Debian */ }
  for (const dir of (process.env['PATH'] ?? '').split(':')) if (dir !== '' && has(dir)) return dir;
  return undefined;
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '(no log)';
  }
}
