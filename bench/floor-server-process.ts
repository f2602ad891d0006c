import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { processTreeCpuSeconds } from '../sim/joinkeep-server.js';
import type { FloorMode } from './floor-server.js';

/** bench/floor-server.ts as a child process; killed with the benchmark whatever happens (its stdin closes). */
export interface FloorServer {
  readonly url: string;
  cpuSeconds(): number;
  stop(): Promise<void>;
}

const script = fileURLToPath(new URL('./floor-server.js', import.meta.url));
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** `target`: the SQLite file (durable-sqlite) or PostgreSQL URL (durable-postgres); unused by `empty`. */
export async function startFloorServer(kind: FloorMode, processes: number, target: string): Promise<FloorServer> {
  const child = spawn(process.execPath, [script, kind, String(processes), target], { stdio: ['pipe', 'pipe', 'inherit'] });
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => { live.delete(child); resolve(); }));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('floor server did not start within 20 s')), 20_000);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { port: number }).port);
      }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`floor server exited with ${code}`)); });
  });
  return {
    url: `http://127.0.0.1:${port}/`,
    cpuSeconds: () => processTreeCpuSeconds(child.pid),
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
