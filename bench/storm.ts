import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { defaultAdmission } from '../src/backend/admission.js';
import { joinkeepCliExists, joinkeepMain } from '../sim/joinkeep-cli.js';
import { bulkOptions, bulkProvision, formatTimings, storageOf } from './bulk-provision.js';
import type { MacMix } from './fleet.js';
import { machineLineNow } from './machine.js';
import { type OpenLoopResult, measureOpenLoop, setAdmission } from './open-loop.js';
import { summarise } from './stats.js';

/*
 * npm run bench:storm — a join storm: N devices (default 100,000, provisioned through sealed batches by
 * bench/bulk-provision.ts) all join within a window (default 60 s), open loop at N / window requests per second from
 * the separate load-generator process, against `joinkeep serve` as its own process. Each device sends one
 * Join-request. Reported: accepts within the network server's deadline (default 1000 ms from the request's scheduled
 * start), accepts that came late, answers shed by the Join Server (by result code), requests the load generator could
 * not send (its connection cap) or that failed (timeouts, HTTP errors), latency of the accepts, joins/s; with
 * admission control on (joinkeep.json defaults unless overridden) and off, one after the other on the same data
 * directory (the second run's devices join for the second time).
 *
 *   node dist/bench/storm.js [--devices 100000] [--window 60] [--deadline-ms 1000] [--admission both|on|off]
 */

const int = (min: number, max: number) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`an integer ${min}…${max}`);
  return n;
};

interface StormOptions {
  devices: number; window: number; deadlineMs: number; connections: number; admission: 'both' | 'on' | 'off';
  maxInFlight?: number; maxQueue?: number; maxQueueMs?: number; verifyEvery: number;
  chunk: number; macVersion: MacMix; storage: string; postgresUrl?: string; reuse?: string; keep?: boolean;
}

const log = (s: string): void => void process.stderr.write(`${s}\n`);

async function main(): Promise<void> {
  const o = bulkOptions(new Command('bench-storm'))
    .option('--devices <n>', 'devices, each joining once within the window', int(1, 1_000_000), 100_000)
    .option('--window <s>', 'seconds over which they all join (open loop at devices / window per second)', int(1, 3600), 60)
    .option('--deadline-ms <ms>', "the network server's budget for the Join-accept, from the Join-request's scheduled start", int(1, 60_000), 1000)
    .option('--connections <n>', 'most requests in flight from the load generator (keep-alive connections)', int(1, 4096), 512)
    .addOption(new Option('--admission <mode>', 'admission control on, off, or both runs').choices(['both', 'on', 'off']).default('both'))
    .option('--max-in-flight <n>', `backend.admission.maxInFlight (default ${defaultAdmission.maxInFlight})`, int(1, 100_000))
    .option('--max-queue <n>', `backend.admission.maxQueue (default ${defaultAdmission.maxQueue})`, int(0, 1_000_000))
    .option('--max-queue-ms <ms>', `backend.admission.maxQueueMs (default ${defaultAdmission.maxQueueMs})`, int(1, 60_000))
    .option('--verify-every <n>', 'check every accept of every n-th device as the NS and the device would, after the clock stops (0 = none)', int(0, 1_000_000), 256)
    .option('--reuse <dir>', 'a run directory from an earlier --keep (or bench/bulk-provision.js --dir): skip provisioning')
    .option('--keep', 'keep the run directory')
    .parse()
    .opts<StormOptions>();
  if (!joinkeepCliExists()) throw new Error(`${joinkeepMain} not found: run npm run build first`);
  const root = o.reuse ?? mkdtempSync(join(tmpdir(), 'joinkeep-storm-'));
  try {
    let dataDir = join(root, 'data');
    if (o.reuse === undefined) {
      log(`storm: provisioning ${o.devices.toLocaleString('en')} devices through sealed batches of ${o.chunk.toLocaleString('en')} in ${root}`);
      const r = await bulkProvision(root, { devices: o.devices, chunk: o.chunk, mix: o.macVersion, storage: storageOf(o) }, (done, t) => log(`  ${done.toLocaleString('en')} devices, ${t.totalS.toFixed(1)} s`));
      dataDir = r.provisioned.dataDir;
      process.stdout.write(`${formatTimings(o.devices, r.timings)}\n`);
    }
    const rate = o.devices / o.window;
    const overrides = { ...(o.maxInFlight === undefined ? {} : { maxInFlight: o.maxInFlight }), ...(o.maxQueue === undefined ? {} : { maxQueue: o.maxQueue }), ...(o.maxQueueMs === undefined ? {} : { maxQueueMs: o.maxQueueMs }) };
    const admission = { ...defaultAdmission, ...overrides };
    const modes = o.admission === 'both' ? (['on', 'off'] as const) : [o.admission];
    const lines: string[] = [];
    for (const mode of modes) {
      setAdmission(dataDir, mode === 'on' ? (Object.keys(overrides).length === 0 ? undefined : overrides) : false);
      log(`storm: admission ${mode}: ${o.devices.toLocaleString('en')} joins over ${o.window} s (${rate.toFixed(0)}/s offered), at most ${o.connections} in flight, deadline ${o.deadlineMs} ms`);
      const r = await measureOpenLoop({ root, dataDir, rate, warmupMs: 0, durationMs: o.window * 1000, connections: o.connections, deadlineMs: o.deadlineMs, joinsPerDevice: 1, verifyEvery: o.verifyEvery });
      lines.push(report(mode === 'on' ? `admission on (maxInFlight ${admission.maxInFlight}, maxQueue ${admission.maxQueue}, maxQueueMs ${admission.maxQueueMs})` : 'admission off', o, r));
    }
    process.stdout.write(`\n${machineLineNow()}\nstorm    ${o.devices.toLocaleString('en')} devices (${o.macVersion}), each joining once over ${o.window} s: ${rate.toFixed(0)} Join-requests/s offered, deadline ${o.deadlineMs} ms, ≤${o.connections} in flight, storage ${o.storage}, software keystore, 1 server process\n\n${lines.join('\n\n')}\n`);
  } finally {
    if (o.keep || o.reuse) log(`storm: kept ${root} (again with --reuse ${root})`);
    else rmSync(root, { recursive: true, force: true });
  }
}

function report(title: string, o: StormOptions, r: OpenLoopResult): string {
  const { load } = r;
  const offered = o.devices;
  const accepted = load.results['Success'] ?? 0;
  const inTime = accepted - load.late;
  const pct = (n: number): string => `${((100 * n) / offered).toFixed(1)} %`;
  const refused = Object.entries(load.errors).filter(([k]) => k.startsWith('Result '));
  const failed = Object.entries(load.errors).filter(([k]) => !k.startsWith('Result '));
  const count = (xs: [string, number][]): number => xs.reduce((a, [, n]) => a + n, 0);
  const l = summarise(load.latenciesNs);
  return [
    title,
    `  accepted within ${o.deadlineMs} ms  ${inTime.toLocaleString('en')} (${pct(inTime)})`,
    `  accepted late              ${load.late.toLocaleString('en')} (${pct(load.late)})`,
    `  answered with a refusal    ${count(refused).toLocaleString('en')} (${pct(count(refused))})${refused.map(([k, n]) => `\n    ${n.toLocaleString('en')} × ${k}`).join('')}`,
    `  not answered / not sent    ${count(failed).toLocaleString('en')} (${pct(count(failed))})${failed.map(([k, n]) => `\n    ${n.toLocaleString('en')} × ${k}`).join('')}`,
    `  server shed counter        ${Object.entries(r.shed).map(([k, n]) => `${k} ${n}`).join(', ') || '-'}`,
    `  accept latency ms          p50 ${l.p50Ms.toFixed(1)}  p95 ${l.p95Ms.toFixed(1)}  p99 ${l.p99Ms.toFixed(1)}  max ${l.maxMs.toFixed(1)}`,
    `  joins/s                    ${(accepted / load.seconds).toFixed(0)} accepted (${(inTime / load.seconds).toFixed(0)} in time); server CPU ${r.serverCpuS.toFixed(1)} s, load generator ${load.cpuS.toFixed(1)} s; accepts verified as device ${load.verified}`,
  ].join('\n');
}

main().catch((e: unknown) => {
  log(`storm: ${(e as Error).message}`);
  process.exitCode = 2;
});
