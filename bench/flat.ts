import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { joinkeepCliExists, joinkeepMain } from '../sim/joinkeep-cli.js';
import { bulkOptions, bulkProvision, formatTimings, storageOf } from './bulk-provision.js';
import type { MacMix } from './fleet.js';
import { machineLineNow } from './machine.js';
import { type OpenLoopResult, measureOpenLoop } from './open-loop.js';
import { summarise } from './stats.js';

/*
 * npm run bench:flat — does join latency stay flat as the device count grows? Two data directories provisioned in the
 * same run through sealed batches (bench/bulk-provision.ts), a small one (default 10,000 devices) and a large one
 * (default 1,000,000), each served in turn by `joinkeep serve` as its own process and driven at the same fixed
 * offered load (open loop, --rate) from the separate load generator, with devices picked at random over the whole
 * fleet (so look-ups touch the whole database, not a hot corner). Prints p50/p95/p99 for each and the ratio of the
 * p99s (the issue's bound: within 20 %). --rounds N alternates small/large N times, to see the VM's noise.
 *
 *   node dist/bench/flat.js [--small 10000] [--large 1000000] [--rate 300] [--duration 20]
 *   node dist/bench/flat.js --reuse-small DIR --reuse-large DIR      (directories from bench/bulk-provision.js --dir)
 */

const int = (min: number, max: number) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`an integer ${min}…${max}`);
  return n;
};

interface FlatOptions {
  small: number; large: number; rate: number; duration: number; warmup: number; sample: number; rounds: number; connections: number;
  chunk: number; macVersion: MacMix; storage: string; postgresUrl?: string; reuseSmall?: string; reuseLarge?: string; keep?: boolean;
}

const log = (s: string): void => void process.stderr.write(`${s}\n`);

async function main(): Promise<void> {
  const o = bulkOptions(new Command('bench-flat'))
    .option('--small <n>', 'devices in the small data directory', int(1, 1_000_000), 10_000)
    .option('--large <n>', 'devices in the large data directory', int(1, 1_000_000), 1_000_000)
    .option('--rate <n>', 'offered Join-requests per second (the same for both)', int(1, 100_000), 300)
    .option('--duration <s>', 'measured seconds per run', int(1, 600), 20)
    .option('--warmup <s>', 'unmeasured seconds before each run', int(0, 120), 5)
    .option('--sample <n>', 'devices joining, picked at random over each fleet', int(1, 1_000_000), 20_000)
    .option('--rounds <n>', 'small, large: this many times, alternating; the p99s pool every round', int(1, 20), 3)
    .option('--connections <n>', 'most requests in flight from the load generator', int(1, 4096), 256)
    .option('--reuse-small <dir>', 'small run directory from bench/bulk-provision.js --dir (skips its provisioning)')
    .option('--reuse-large <dir>', 'large run directory from bench/bulk-provision.js --dir (skips its provisioning)')
    .option('--keep', 'keep the run directories')
    .parse()
    .opts<FlatOptions>();
  if (!joinkeepCliExists()) throw new Error(`${joinkeepMain} not found: run npm run build first`);
  const made: string[] = [];
  try {
    const dirs: { name: string; devices: number; root: string }[] = [];
    for (const [name, devices, reuse] of [['small', o.small, o.reuseSmall], ['large', o.large, o.reuseLarge]] as const) {
      if (reuse !== undefined) {
        dirs.push({ name, devices, root: reuse });
        continue;
      }
      const root = mkdtempSync(join(tmpdir(), `joinkeep-flat-${name}-`));
      made.push(root);
      log(`flat: provisioning ${devices.toLocaleString('en')} devices through sealed batches in ${root}`);
      const r = await bulkProvision(root, { devices, chunk: o.chunk, mix: o.macVersion, storage: storageOf(o) }, (done, t) => log(`  ${done.toLocaleString('en')} devices, ${t.totalS.toFixed(1)} s`));
      process.stdout.write(`${name}: ${formatTimings(devices, r.timings)}\n`);
      dirs.push({ name, devices, root });
    }
    // Provisioning a million devices leaves hundreds of megabytes for the kernel to write back; measured meanwhile, the
    // first rounds' fsyncs would queue behind it. Both fleets are measured with nothing left to write.
    execFileSync('sync');
    const runs: { name: string; devices: number; r: OpenLoopResult }[] = [];
    for (let round = 0; round < o.rounds; round++) {
      for (const d of dirs) {
        log(`flat: ${d.name} (${d.devices.toLocaleString('en')} devices): ${o.rate}/s offered, ${o.warmup} s warm-up + ${o.duration} s, ${Math.min(o.sample, d.devices).toLocaleString('en')} devices joining`);
        const r = await measureOpenLoop({ root: d.root, dataDir: join(d.root, 'data'), rate: o.rate, warmupMs: o.warmup * 1000, durationMs: o.duration * 1000, connections: o.connections, sample: o.sample, verifyEvery: 64 });
        runs.push({ name: d.name, devices: d.devices, r });
      }
    }
    const rows = runs.map(({ name, devices, r }) => {
      const l = summarise(r.load.latenciesNs);
      const errors = Object.values(r.load.errors).reduce((a, b) => a + b, 0);
      return { name, devices, l, line: `${name.padEnd(6)} ${devices.toLocaleString('en').padStart(9)}  ${(r.load.joins / r.load.seconds).toFixed(0).padStart(7)}  ${l.p50Ms.toFixed(1).padStart(7)}  ${l.p95Ms.toFixed(1).padStart(7)}  ${l.p99Ms.toFixed(1).padStart(7)}  ${String(errors).padStart(6)}  ${(r.serverCpuS / (o.warmup + o.duration) / (r.load.joins / r.load.seconds) * 1e3).toFixed(2).padStart(8)}  ${r.load.verified}` };
    });
    // Each fleet's p99 over every round's samples together: one estimate from all the measurements, steadier than a
    // median of per-round p99s (each the 1 % tail of a few thousand samples).
    const pooled = (['small', 'large'] as const).map((name) => ({
      name,
      l: summarise(runs.filter((r) => r.name === name).flatMap((r) => [...r.r.load.latenciesNs])),
    }));
    const ratio = pooled[1]!.l.p99Ms / pooled[0]!.l.p99Ms;
    const allRounds = o.rounds > 1
      ? ['', ...pooled.map(({ name, l }) => `${`${name}, all ${o.rounds} rounds`.padEnd(24)} ${l.p50Ms.toFixed(1).padStart(7)}  ${l.p95Ms.toFixed(1).padStart(7)}  ${l.p99Ms.toFixed(1).padStart(7)}  (${l.count.toLocaleString('en')} samples)`)]
      : [];
    process.stdout.write(
      [
        '',
        machineLineNow(),
        `flat     ${o.rate}/s offered (open loop, ≤${o.connections} in flight), ${o.warmup} s warm-up + ${o.duration} s per run, ${o.rounds} round(s), devices ${o.macVersion}, storage ${o.storage}, software keystore, 1 server process`,
        '',
        'fleet      devices  joins/s  p50 ms   p95 ms   p99 ms  errors  CPU/join  verified',
        ...rows.map((r) => r.line),
        ...allRounds,
        '',
        `ratio p99 large / small = ${ratio.toFixed(3)} (${((ratio - 1) * 100).toFixed(1)} %; bound: within 20 %)${o.rounds > 1 ? `, p99 over the samples of all ${o.rounds} rounds` : ''}`,
        ...runs.flatMap(({ name, r }) => Object.entries(r.load.errors).map(([k, n]) => `  ${name}: ${n} × ${k}`)),
      ].join('\n') + '\n',
    );
  } finally {
    if (o.keep) log(`flat: kept ${made.join(', ')}`);
    else for (const d of made) rmSync(d, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  log(`flat: ${(e as Error).message}`);
  process.exitCode = 2;
});
