import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AdmissionSettings } from '../src/backend/admission.js';
import { startServer } from '../sim/joinkeep-server.js';
import { type LoadResult, runLoad } from './load.js';
import { assertLoopbackUrl } from './options.js';

/*
 * One open-loop measurement against `joinkeep serve` started as its own process on a data directory provisioned by
 * bench/bulk-provision.ts, with the load from the separate load-generator process (bench/load-process.ts). Shared by
 * bench:storm and bench:flat.
 */

/** Sets backend.admission in the data directory's joinkeep.json, as an operator would edit it. */
export function setAdmission(dataDir: string, admission: Partial<AdmissionSettings> | false | undefined): void {
  const path = join(dataDir, 'joinkeep.json');
  const config = JSON.parse(readFileSync(path, 'utf8')) as { backend: Record<string, unknown> };
  if (admission === undefined) delete config.backend['admission'];
  else config.backend['admission'] = admission;
  writeFileSync(path, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}

export interface OpenLoopSpec {
  readonly root: string;
  readonly dataDir: string;
  readonly rate: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Most requests in flight from the load generator (= keep-alive connections). */
  readonly connections: number;
  readonly deadlineMs?: number | undefined;
  readonly joinsPerDevice?: number | undefined;
  readonly sample?: number | undefined;
  readonly verifyEvery: number;
}

export interface OpenLoopResult {
  readonly load: LoadResult;
  /** Server CPU seconds during warm-up + measurement. */
  readonly serverCpuS: number;
  /** joinkeep_backend_shed_total by reason, at the end. */
  readonly shed: Record<string, number>;
}

export async function measureOpenLoop(s: OpenLoopSpec): Promise<OpenLoopResult> {
  const server = await startServer(s.dataDir, { readyTimeoutMs: 60_000 });
  try {
    assertLoopbackUrl(server.url);
    let cpu0 = 0;
    const load = await runLoad(
      {
        url: server.url, concurrency: s.connections, warmupMs: s.warmupMs, durationMs: s.durationMs, rate: s.rate, timeoutMs: 15_000, deadlineMs: s.deadlineMs,
        work: { kind: 'joins', fleetRoot: s.root, style: 'tts', verifyEvery: s.verifyEvery, maxRate: Math.ceil(s.rate), joinsPerDevice: s.joinsPerDevice, sample: s.sample },
      },
      () => { cpu0 = server.cpuSeconds(); },
    );
    const serverCpuS = server.cpuSeconds() - cpu0;
    const text = await (await fetch(new URL('/metrics', server.url))).text();
    const shed: Record<string, number> = {};
    for (const m of text.matchAll(/^joinkeep_backend_shed_total\{reason="(\w+)"\} (\S+)$/gm)) shed[m[1]!] = Number(m[2]);
    return { load, serverCpuS, shed };
  } finally {
    await server.stop();
  }
}
