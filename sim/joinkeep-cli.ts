import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The Joinkeep CLI (dist/src/cli/main.js) as a separate process, the way an operator runs it. */

export const projectRoot = fileURLToPath(new URL('../../', import.meta.url));
export const joinkeepMain = `${projectRoot}dist/src/cli/main.js`;

export function joinkeepCliExists(): boolean {
  return existsSync(joinkeepMain);
}

export class CliError extends Error {
  override readonly name = 'CliError';
}

export function runJoinkeep(args: readonly string[], dataDir: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [joinkeepMain, ...args],
      { env: { ...process.env, JOINKEEP_DATA_DIR: dataDir }, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) reject(new CliError(`joinkeep ${args.slice(0, 2).join(' ')} failed: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      },
    );
  });
}
