import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { LoadMessage, LoadReport, LoadSpec } from './load-process.js';

/*
 * Runs bench/load-process.ts as its own process and waits for its report. `onStarted` fires when the load
 * generator has prepared its requests and starts the clock (warm-up included): callers read the server's
 * CPU and counters from then on.
 */

export type LoadResult = LoadReport;
export type { LoadSpec };

const script = fileURLToPath(new URL('./load-process.js', import.meta.url));

export function runLoad(spec: LoadSpec, onStarted: () => void = () => undefined): Promise<LoadResult> {
  const child = fork(script, [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  return new Promise<LoadResult>((resolve, reject) => {
    let settled = false;
    child.on('message', (m: LoadMessage) => {
      if (m.type === 'started') onStarted();
      else if (m.type === 'result') { settled = true; resolve(m.report); }
      else { settled = true; reject(new Error(`load generator: ${m.message}`)); }
    });
    child.once('exit', (code, signal) => {
      process.off('exit', kill);
      if (!settled) reject(new Error(`load generator exited (${signal ?? code}) without a report`));
    });
    child.send(spec);
  });
}

export const errorTotal = (r: LoadResult): number => Object.values(r.errors).reduce((a, b) => a + b, 0);
