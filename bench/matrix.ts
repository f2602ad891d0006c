import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { joinkeepCliExists, joinkeepMain } from '../sim/joinkeep-cli.js';
import { type JoinLoad, openConfiguration } from './configuration.js';
import { buildFleet } from './fleet.js';
import { measureFloor } from './floor.js';
import { measureSoftHsmFloor } from './floor-softhsm.js';
import { fsyncMedianMs } from './fsync-probe.js';
import { type LoadShape, httpFloorName, measureHttpFloor } from './http-floor.js';
import { type LoadResult, errorTotal } from './load.js';
import { machineInfo, machineLine } from './machine.js';
import { type TableConfiguration, parseTableOptions } from './options.js';
import { type BenchPostgres, benchPostgres } from './postgres-cluster.js';
import { softhsmModule, useSoftHsmIn } from './softhsm.js';
import { type LatencySummary, summarise } from './stats.js';
import { fixed, renderGrid } from './table.js';

/*
 * npm run bench:table — one table for the performance issue: every keystore × storage configuration over real HTTP
 * (`joinkeep serve` on loopback, load from its own process), at saturation and at fixed offered loads (open loop at
 * a share of the saturation just measured), next to the floors measured in the same run with the same process
 * layout and load generator: join crypto alone (software keystore, SoftHSM2), an empty Fastify POST, and one durable
 * state update per request (SQLite, PostgreSQL). Each result is printed as a ratio to its floor, with the target and
 * whether it is met. Bounded by a watchdog; everything it starts (servers, load generators, a throwaway PostgreSQL
 * cluster) is stopped on every exit path.
 */

const log = (s: string): void => void process.stderr.write(`${s}\n`);

type FloorKey = 'crypto-software' | 'crypto-softhsm' | 'empty' | 'durable-sqlite' | 'durable-postgres';

interface Floor {
  readonly key: FloorKey;
  readonly name: string;
  readonly offered: string;
  readonly perSecond: number;
  readonly latency: LatencySummary;
  readonly errors: number;
  /** Server CPU ms per request (HTTP floors). */
  readonly cpuMsPerRequest?: number;
}

interface Target {
  readonly text: string;
  readonly met: boolean;
}

interface Measurement {
  readonly configuration: TableConfiguration;
  readonly name: string;
  /** undefined = saturation (closed loop); else the offered rate and its share of saturation. */
  readonly offered: { readonly rate: number; readonly percent: number } | undefined;
  readonly perSecond: number;
  readonly latency: LatencySummary;
  readonly errors: Record<string, number>;
  readonly serverCpuMsPerJoin: number;
  readonly floor: FloorKey;
  readonly ratio: number;
  readonly target: Target | undefined;
}

const NAMES: Record<TableConfiguration, string> = {
  'software-sqlite': 'software × SQLite',
  'software-postgres': 'software × PostgreSQL',
  'softhsm-sqlite': 'SoftHSM2 × SQLite',
  'softhsm-postgres': 'SoftHSM2 × PostgreSQL',
};

/** The issue's targets. Throughput ratios are at saturation; the latency target at half of saturation. */
const SATURATION_TARGETS: Partial<Record<TableConfiguration, number>> = { 'software-sqlite': 0.25, 'software-postgres': 0.15, 'softhsm-sqlite': 0.5 };
const P99_TARGET = { configuration: 'software-sqlite' as TableConfiguration, percent: 50, ms: 5 };

const custodyOf = (c: TableConfiguration): 'software' | 'pkcs11' => (c.startsWith('softhsm') ? 'pkcs11' : 'software');
const storageOf = (c: TableConfiguration): 'sqlite' | 'postgres' => (c.endsWith('postgres') ? 'postgres' : 'sqlite');
/** The floor each configuration's target is stated against. */
const targetFloorOf = (c: TableConfiguration): FloorKey => (custodyOf(c) === 'pkcs11' ? 'crypto-softhsm' : 'empty');

async function main(): Promise<void> {
  const o = parseTableOptions(process.argv.slice(2), availableParallelism());
  if (!joinkeepCliExists()) throw new Error(`${joinkeepMain} not found: run npm run build first`);
  const perLoadS = o.warmupS + o.durationS + 20; // + load-generator preparation, server start, slack
  const budgetS = 300 + 2 * o.floorDurationS + 3 * perLoadS + o.configurations.length * (90 + o.devices * 0.1 + (1 + o.loads.length) * perLoadS);
  const watchdog = setTimeout(() => {
    log(`bench: watchdog after ${Math.round(budgetS)} s — aborting`);
    process.exit(3); // exit hooks kill the servers and stop a throwaway PostgreSQL cluster
  }, budgetS * 1000);
  watchdog.unref();

  const machine = machineInfo();
  const loadBefore = loadavg()[0] ?? 0;
  if (loadBefore > availableParallelism() / 2) log(`bench: warning — load average ${loadBefore.toFixed(2)} on ${availableParallelism()} CPUs: other work will distort the figures`);
  const root = mkdtempSync(join(tmpdir(), 'joinkeep-bench-table-'));
  // Also on the watchdog, signals and uncaught errors (the finally below does not run on process.exit).
  const removeRoot = (): void => rmSync(root, { recursive: true, force: true });
  process.once('exit', removeRoot);
  const skipped: string[] = [];
  let postgres: BenchPostgres | undefined;
  try {
    const shape: LoadShape = { concurrency: o.concurrency, warmupMs: o.warmupS * 1000, durationMs: o.durationS * 1000, timeoutMs: 10_000 };
    const saturation = `sat. (${o.concurrency} in flight)`;
    const floors = new Map<FloorKey, Floor>();
    const floorFleet = buildFleet(Math.min(512, o.devices), o.macVersion);

    // --- What is available on this machine ---------------------------------------------------------------------
    let configurations = [...o.configurations];
    if (configurations.some((c) => custodyOf(c) === 'pkcs11')) {
      const why = softHsmMissing();
      if (why !== undefined) {
        skipped.push(`SoftHSM2 rows skipped: ${why}`);
        configurations = configurations.filter((c) => custodyOf(c) !== 'pkcs11');
      }
    }
    const wantPostgres = configurations.some((c) => storageOf(c) === 'postgres');
    if (wantPostgres) {
      const pg = await benchPostgres(o.postgresUrl, log);
      if ('skipped' in pg) {
        skipped.push(`PostgreSQL rows skipped: ${pg.skipped}`);
        configurations = configurations.filter((c) => storageOf(c) !== 'postgres');
      } else postgres = pg;
    }

    // --- Floors ----------------------------------------------------------------------------------------------------
    log(`bench: floor — join crypto, software keystore, in-process, one core, ${o.floorDurationS} s`);
    const crypto = measureFloor(floorFleet, o.floorDurationS * 1000, Buffer.alloc(16, 1), Buffer.alloc(16, 2));
    floors.set('crypto-software', { key: 'crypto-software', name: 'floor: join crypto, software keystore', offered: 'loop, 1 core', perSecond: crypto.joins / crypto.seconds, latency: summarise(crypto.latenciesNs), errors: 0 });
    if (configurations.some((c) => custodyOf(c) === 'pkcs11')) {
      const dir = join(root, 'floor-softhsm');
      mkdirSync(dir);
      useSoftHsmIn(dir);
      log(`bench: floor — join crypto in SoftHSM2, synchronous on one session, one core, ${o.floorDurationS} s`);
      const token = await measureSoftHsmFloor(floorFleet, o.floorDurationS * 1000, `bench-floor-${randomBytes(4).toString('hex')}`);
      floors.set('crypto-softhsm', { key: 'crypto-softhsm', name: 'floor: join crypto, SoftHSM2', offered: 'loop, 1 core', perSecond: token.joins / token.seconds, latency: summarise(token.latenciesNs), errors: 0 });
    }
    const httpFloor = async (key: 'empty' | 'durable-sqlite' | 'durable-postgres', target: string): Promise<void> => {
      const name = httpFloorName(key, o.processes);
      log(`bench: ${name}, ${o.concurrency} in flight, ${o.warmupS} s + ${o.durationS} s`);
      const f = await measureHttpFloor(key, o.processes, target, shape);
      const perSecond = f.load.joins / f.load.seconds;
      floors.set(key, { key, name, offered: saturation, perSecond, latency: summarise(f.load.latenciesNs), errors: errorTotal(f.load), cpuMsPerRequest: (f.cpuS / (o.warmupS + o.durationS) / perSecond) * 1e3 });
    };
    await httpFloor('empty', '');
    await httpFloor('durable-sqlite', join(root, 'floor-durable.db'));
    let floorDb: { url: string; drop(): Promise<void> } | undefined;
    if (postgres) {
      floorDb = await postgres.createDatabase();
      try {
        await httpFloor('durable-postgres', floorDb.url);
      } finally {
        await floorDb.drop();
      }
    }

    // --- Configurations ----------------------------------------------------------------------------------------
    const measurements: Measurement[] = [];
    for (const c of configurations) {
      const dir = join(root, c);
      mkdirSync(dir);
      const db = storageOf(c) === 'postgres' ? await postgres!.createDatabase() : undefined;
      try {
        const config = await openConfiguration({
          root: dir, devices: o.devices, macVersion: o.macVersion, processes: o.processes, provisionParallelism: o.provisionParallelism,
          storage: { kind: storageOf(c), postgresUrl: db?.url, custody: custodyOf(c), tokens: 1 },
        }, log);
        try {
          const joinLoad = (rate: number | undefined): JoinLoad => ({ ...shape, rate, style: o.style, verifyEvery: o.verifyEvery, maxRate: rate === undefined ? o.maxRate : Math.ceil(rate * 1.1) + 10 });
          const record = (offered: Measurement['offered'], load: LoadResult, serverCpuS: number): Measurement => {
            const perSecond = load.joins / load.seconds;
            const floor = targetFloorOf(c);
            const ratio = perSecond / floors.get(floor)!.perSecond;
            const latency = summarise(load.latenciesNs);
            let target: Target | undefined;
            const min = SATURATION_TARGETS[c];
            if (offered === undefined && min !== undefined) target = { text: `ratio ≥ ${min.toFixed(2)}`, met: ratio >= min };
            if (offered !== undefined && c === P99_TARGET.configuration && offered.percent === P99_TARGET.percent) target = { text: `p99 < ${P99_TARGET.ms} ms`, met: latency.p99Ms < P99_TARGET.ms && errorTotal(load) === 0 };
            const m: Measurement = { configuration: c, name: NAMES[c], offered, perSecond, latency, errors: load.errors, serverCpuMsPerJoin: (serverCpuS / (o.warmupS + o.durationS) / Math.max(perSecond, 1e-9)) * 1e3, floor, ratio, target };
            measurements.push(m);
            return m;
          };
          log(`bench: ${NAMES[c]} — saturation, ${o.concurrency} in flight, ${o.warmupS} s + ${o.durationS} s`);
          const sat = await config.measure(joinLoad(undefined));
          const satRate = record(undefined, sat.load, sat.serverCpuS).perSecond;
          for (const percent of o.loads) {
            const rate = Math.max(1, Math.round((satRate * percent) / 100));
            log(`bench: ${NAMES[c]} — ${rate}/s offered (${percent} % of saturation), open loop, at most ${o.concurrency} in flight`);
            const fixedLoad = await config.measure(joinLoad(rate));
            record({ rate, percent }, fixedLoad.load, fixedLoad.serverCpuS);
          }
        } finally {
          await config.close();
        }
      } finally {
        await db?.drop();
      }
    }
    const loadAfter = loadavg()[0] ?? 0;
    const fsyncMs = fsyncMedianMs(root);

    // --- The table -------------------------------------------------------------------------------------------------
    const ms = (n: number): string => fixed(n, 2);
    const floorRows = [...floors.values()].map((f) => [f.name, f.offered, fixed(f.perSecond, 0), ms(f.latency.p50Ms), ms(f.latency.p95Ms), ms(f.latency.p99Ms), String(f.errors), '—', '—', '—', '—']);
    const rows = measurements.map((m) => [
      m.name,
      m.offered === undefined ? saturation : `${m.offered.rate}/s (${m.offered.percent} %)`,
      fixed(m.perSecond, 0), ms(m.latency.p50Ms), ms(m.latency.p95Ms), ms(m.latency.p99Ms),
      String(Object.values(m.errors).reduce((a, b) => a + b, 0)),
      floorLabel(m.floor), fixed(m.ratio, 3), m.target?.text ?? '—', m.target === undefined ? '—' : m.target.met ? 'met' : 'NOT MET',
    ]);
    const table = renderGrid(['configuration', 'offered load', 'joins/s', 'p50 ms', 'p95 ms', 'p99 ms', 'errors', 'floor used', 'ratio', 'target', 'met?'], [...floorRows, ...rows]);
    // Every saturation result against every floor that applies to it.
    const perSecond = (k: FloorKey): number => floors.get(k)?.perSecond ?? Number.NaN;
    const ratioRows = measurements.filter((m) => m.offered === undefined).map((m) => [
      m.name,
      fixed(m.perSecond / perSecond(custodyOf(m.configuration) === 'pkcs11' ? 'crypto-softhsm' : 'crypto-software'), 3),
      fixed(m.perSecond / perSecond('empty'), 3),
      fixed(m.perSecond / perSecond(storageOf(m.configuration) === 'postgres' ? 'durable-postgres' : 'durable-sqlite'), 3),
      fixed(m.serverCpuMsPerJoin, 2),
    ]);
    const ratios = renderGrid(['at saturation', '÷ crypto floor (its keystore)', '÷ empty POST', '÷ durable update (its storage)', 'server CPU ms/join'], ratioRows);
    const unmetMissing = (Object.keys(SATURATION_TARGETS) as TableConfiguration[]).filter((c) => !measurements.some((m) => m.configuration === c))
      .map((c) => `target for ${NAMES[c]} (ratio ≥ ${SATURATION_TARGETS[c]!.toFixed(2)}): not measured in this run`);
    if (!measurements.some((m) => m.configuration === P99_TARGET.configuration && m.offered?.percent === P99_TARGET.percent)) {
      const why = measurements.some((m) => m.configuration === P99_TARGET.configuration) ? `--loads lacks ${P99_TARGET.percent}` : 'configuration not in this run';
      unmetMissing.push(`target p99 < ${P99_TARGET.ms} ms at ${P99_TARGET.percent} % of saturation (${NAMES[P99_TARGET.configuration]}): not measured (${why})`);
    }
    const errorLines = measurements.flatMap((m) => Object.entries(m.errors).map(([k, v]) => `  ${m.name}, ${m.offered === undefined ? 'saturation' : `${m.offered.rate}/s`}: ${v} × ${k}`));
    const out = [
      '',
      machineLine(machine),
      `host     load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after; fsync (128 B, run directory's file system) median ${fsyncMs.toFixed(2)} ms`,
      `run      ${o.devices} devices per configuration (${o.macVersion}), style ${o.style}, ${o.processes} server process(es), ${o.concurrency} keep-alive connections, ${o.warmupS} s warm-up + ${o.durationS} s per load, crypto floors ${o.floorDurationS} s; SQLite synchronous=FULL; ${postgres?.description ?? 'no PostgreSQL'}`,
      '',
      table,
      '',
      ratios,
      '',
      'floors: crypto = the server-side join crypto in-process on one core (no HTTP, no storage); empty POST and durable update = bench/floor-server.ts,',
      '        same process layout, load generator and connections as the joins. Ratio = joins/s ÷ the floor used; fixed-load rows are open loop (latency from the scheduled start).',
      ...(unmetMissing.length > 0 || skipped.length > 0 ? ['', ...skipped, ...unmetMissing] : []),
      ...(errorLines.length > 0 ? ['', 'errors:', ...errorLines] : []),
    ].join('\n');
    const json = {
      machine, loadBefore, loadAfter, fsyncMs, options: o, postgres: postgres?.description ?? null, skipped,
      floors: [...floors.values()],
      measurements: measurements.map((m) => ({ ...m, target: m.target ?? null, offered: m.offered ?? 'saturation', floorPerSecond: perSecond(m.floor) })),
    };
    if (o.json === true) {
      process.stderr.write(`${out}\n`);
      process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
    } else {
      process.stdout.write(`${out}\n`);
      if (typeof o.json === 'string') writeFileSync(o.json, `${JSON.stringify(json, null, 2)}\n`);
    }
    if (errorLines.length > 0) process.exitCode = 1;
  } finally {
    await postgres?.stop();
    removeRoot();
    process.off('exit', removeRoot);
    clearTimeout(watchdog);
  }
}

function floorLabel(k: FloorKey): string {
  return { 'crypto-software': 'crypto (software)', 'crypto-softhsm': 'crypto (SoftHSM2)', empty: 'empty POST', 'durable-sqlite': 'durable (SQLite)', 'durable-postgres': 'durable (PostgreSQL)' }[k];
}

/** Why SoftHSM2 cannot be used here, or undefined when it can. */
function softHsmMissing(): string | undefined {
  try {
    softhsmModule();
    execFileSync('softhsm2-util', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch (error) {
    return (error as Error).message.includes('softhsm2-util') || (error as { code?: string }).code === 'ENOENT' ? 'softhsm2-util not found (Debian: apt-get install softhsm2)' : (error as Error).message;
  }
}

main().catch((e: unknown) => {
  log(`bench: ${(e as Error).message}`);
  process.exitCode = 2;
});

