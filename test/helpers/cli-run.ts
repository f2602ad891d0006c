import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aesKeyWrap } from '../../src/custody/primitives.js';
import { projectRoot } from './vectors.js';

/*
 * Drives the compiled CLI as a user does: `node dist/src/cli/main.js …` from the project root, in a child process,
 * with an environment that carries none of the developer's JOINKEEP_* settings unless a test passes them.
 */

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly args: readonly string[];
}

export const CLI = 'dist/src/cli/main.js';

/** The environment of a CLI run: the test process's, minus every JOINKEEP_* variable, plus `extra`. */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('JOINKEEP_')) env[k] = v;
  return { ...env, ...extra };
}

export function runCli(args: readonly string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: projectRoot(), env: cliEnv(options.env), timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') {
          reject(new Error(`joinkeep ${args.join(' ')} did not run: ${error.message}\n${stderr}`));
          return;
        }
        resolve({ code: error ? Number(error.code) : 0, stdout, stderr, args });
      },
    );
  });
}

/** Runs a command that must succeed; the failure message shows what the CLI said. */
export async function cliOk(args: readonly string[], options: { env?: Record<string, string> } = {}): Promise<CliResult> {
  const r = await runCli(args, options);
  if (r.code !== 0) throw new Error(`joinkeep ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** Runs a `--json` command that must succeed and parses its output. */
export async function cliJson<T>(args: readonly string[], options: { env?: Record<string, string> } = {}): Promise<T> {
  const r = await cliOk([...args, '--json'], options);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`joinkeep ${args.join(' ')} --json printed something that is not JSON: ${r.stdout}`);
  }
}

/** A fresh temporary directory; `dataDir` inside it does not exist yet (for `init`). */
export async function tempRoot(prefix = 'joinkeep-cli-'): Promise<{ root: string; dataDir: string; cleanup(): Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  return { root, dataDir: join(root, 'data'), cleanup: () => rm(root, { recursive: true, force: true }) };
}

/** Writes a secret file (KEK hex, bearer token) with mode 0600 and returns its path. */
export async function writeSecretFile(dir: string, name: string, content: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content, { mode: 0o600 });
  return path;
}

/** A TS002 KeyEnvelope as `device add` takes it: RFC 3394 wrap of `key` under `kek`, labelled. */
export function wrappedEnvelope(kekLabel: string, kek: Uint8Array, key: Uint8Array): string {
  return JSON.stringify({ KEKLabel: kekLabel, AESKey: aesKeyWrap(kek, key).toString('hex').toUpperCase() });
}

export interface DataDirSnapshot {
  readonly devices: unknown;
  readonly keks: unknown;
  readonly peers: unknown;
  readonly auditCount: number;
}

/** What a refused command must leave unchanged: devices, KEKs, peers and the audit trail, read through the CLI. */
export async function snapshot(dataDir: string, env: Record<string, string> = {}): Promise<DataDirSnapshot> {
  const dd = ['--data-dir', dataDir];
  const [devices, keks, peers, audit] = await Promise.all([
    cliJson<{ items: unknown[] }>(['device', 'list', ...dd, '--limit', '1000'], { env }),
    cliJson<unknown[]>(['kek', 'list', ...dd], { env }),
    cliJson<unknown[]>(['peer', 'list', ...dd], { env }),
    cliJson<{ items: unknown[]; next?: string }>(['audit', 'list', ...dd, '--limit', '1000'], { env }),
  ]);
  if (audit.next !== undefined) throw new Error('snapshot: more than 1000 audit events');
  return { devices, keks, peers, auditCount: audit.items.length };
}
