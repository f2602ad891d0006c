import { type FloorServer, startFloorServer } from './floor-server-process.js';
import type { FloorMode } from './floor-server.js';
import { type LoadResult, runLoad } from './load.js';

/*
 * One HTTP floor (bench/floor-server.ts) measured with the same load generator, connections, warm-up and duration
 * as the end-to-end runs, and the same process layout (`--processes N`).
 */

export interface LoadShape {
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Open loop at this many requests per second; undefined = closed loop at saturation. */
  readonly rate?: number | undefined;
  readonly timeoutMs: number;
}

export interface HttpFloorResult {
  readonly kind: FloorMode;
  readonly load: LoadResult;
  /** Server CPU seconds over warm-up + measurement. */
  readonly cpuS: number;
}

export function httpFloorName(kind: FloorMode, processes: number): string {
  const what = kind === 'empty' ? 'empty Fastify POST' : kind === 'durable-sqlite' ? 'POST + 1 durable update, SQLite' : 'POST + 1 durable update, PostgreSQL';
  return `floor: ${what} (${processes} proc)`;
}

/** `target`: the SQLite file (durable-sqlite) or PostgreSQL URL (durable-postgres); ignored by `empty`. */
export async function measureHttpFloor(kind: FloorMode, processes: number, target: string, shape: LoadShape): Promise<HttpFloorResult> {
  const server: FloorServer = await startFloorServer(kind, processes, target);
  try {
    let cpu0 = 0;
    const load = await runLoad({ ...shape, url: server.url, work: { kind: 'posts' } }, () => { cpu0 = server.cpuSeconds(); });
    return { kind, load, cpuS: server.cpuSeconds() - cpu0 };
  } finally {
    await server.stop();
  }
}
