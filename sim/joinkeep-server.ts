import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { createServer } from 'node:net';
import { joinkeepMain } from './joinkeep-cli.js';

/*
 * `joinkeep serve` as a child process on a loopback port. Whatever happens in the benchmark, the child is
 * killed: on normal exit, on signals, and on uncaught errors.
 */

export interface RunningServer {
  readonly url: string;
  /** The REST API's base URL (`http://127.0.0.1:<port>`), when started with `api: true`. */
  readonly apiUrl?: string;
  /** CPU seconds (user + system) the server process and its live children (serve --processes) have used so far (Linux /proc; NaN elsewhere). */
  cpuSeconds(): number;
  readonly port: number;
  readonly pid: number;
  /** Last lines of the server's stderr, for error reports. */
  stderrTail(): string;
  /** Settles when the process has exited: its exit code, or the signal that ended it. */
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
let hooksInstalled = false;

function killAll(): void {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      killAll();
      process.exit(130);
    });
  }
}

export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function startServer(
  dataDir: string,
  opts: {
    readyTimeoutMs?: number;
    extraEnv?: Record<string, string>;
    nodeArgs?: readonly string[];
    args?: readonly string[];
    api?: boolean;
    /** The Backend Interfaces listener is on TLS (backend.tls in joinkeep.json): wait on https, trusting `ca`. */
    tls?: { readonly ca: Buffer | string };
  } = {},
): Promise<RunningServer> {
  installHooks();
  const port = await freeLoopbackPort();
  const apiPort = opts.api === true ? await freeLoopbackPort() : undefined;
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), joinkeepMain, 'serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, ...(apiPort === undefined ? [] : ['--api-listen', `127.0.0.1:${apiPort}`]), ...(opts.args ?? [])], {
    env: { ...process.env, JOINKEEP_DATA_DIR: dataDir, ...opts.extraEnv },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  let tail = '';
  child.stderr?.on('data', (c: Buffer) => {
    tail = (tail + c.toString('utf8')).slice(-4000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => { children.delete(child); resolve({ code, signal }); }));
  const url = `${opts.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}/`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
  // Both listeners: the REST API may open after the Backend Interfaces listener answers.
  while (!(await healthy(port, '/healthz', opts.tls?.ca)) || (apiPort !== undefined && !(await healthy(apiPort, '/api/v1/openapi.json')))) {
    if (child.exitCode !== null) throw new Error(`joinkeep serve exited with ${child.exitCode}: ${tail.trim()}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`joinkeep serve not healthy on 127.0.0.1:${port} within ${opts.readyTimeoutMs ?? 20_000} ms: ${tail.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    ...(apiPort === undefined ? {} : { apiUrl: `http://127.0.0.1:${apiPort}` }),
    port,
    pid: child.pid ?? -1,
    stderrTail: () => tail,
    exited,
    cpuSeconds: () => processTreeCpuSeconds(child.pid),
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

function healthy(port: number, path = '/healthz', ca?: Buffer | string): Promise<boolean> {
  return new Promise((resolve) => {
    const get = ca === undefined ? http.get : (o: https.RequestOptions, cb: (res: http.IncomingMessage) => void) => https.get({ ...o, ca }, cb);
    const req = get({ host: '127.0.0.1', port, path, timeout: 1_000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => { req.destroy(); resolve(false); });
  });
}

function statFields(pid: number | string): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Fields 14 and 15 of /proc/PID/stat (utime, stime) in clock ticks; Linux uses 100 ticks per second. */
function procCpuSeconds(pid: number | string): number {
  const fields = statFields(pid);
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The process and its direct children (cluster workers). */
export function processTreeCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    let total = procCpuSeconds(pid);
    for (const child of childPids(pid)) {
      try {
        total += procCpuSeconds(child);
      } catch { /* exited meanwhile */ }
    }
    return total;
  } catch {
    return Number.NaN;
  }
}

/** Pids of the direct children of `pid`: field 4 of /proc/PID/stat is the parent's pid (Linux; empty elsewhere). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (Number(statFields(entry)[1]) === pid) out.push(Number(entry));
      } catch { /* exited meanwhile */ }
    }
  } catch { /* no /proc */ }
  return out;
}
