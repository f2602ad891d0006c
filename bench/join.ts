import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFleet } from './fleet.js';
import { type FloorResult, measureFloor } from './floor.js';
import { measureCustodyFloor } from './floor-custody.js';
import type { TokenFloorResult } from './floor-token.js';
import { measureSoftHsmFloor } from './floor-softhsm.js';
import { type Pkcs11Counters, totalCalls } from '../src/custody/pkcs11/counters.js';
import { createToken, softhsmModule, useSoftHsmIn } from './softhsm.js';
import { fsyncMedianMs } from './fsync-probe.js';
import { joinkeepCliExists, joinkeepMain } from '../sim/joinkeep-cli.js';
import { type LoadResult, errorTotal } from './load.js';
import { type HttpFloorResult, httpFloorName, measureHttpFloor } from './http-floor.js';
import { type Configuration, type JoinLoad, openConfiguration } from './configuration.js';
import { formatGroupCommitFigures } from './group-commit-figures.js';
import { machineInfo, machineLine } from './machine.js';
import { parseBenchOptions } from './options.js';
import { summarise } from './stats.js';
import { renderTable } from './table.js';

/*
 * npm run bench: provision a temporary Joinkeep with the CLI, run `joinkeep serve` as its own process on
 * loopback, drive joins at saturation from this process, and compare with the crypto floor measured here
 * on one core. Bounded: a watchdog ends the run (and the server) whatever happens.
 */

const log = (s: string): void => void process.stderr.write(`${s}\n`);

async function main(): Promise<void> {
  const o = parseBenchOptions(process.argv.slice(2), availableParallelism());
  if (!joinkeepCliExists()) throw new Error(`${joinkeepMain} not found: run npm run build first`);
  // Generous bounds: `joinkeep device add` costs ~0.5–1.5 s of wall time per device on a 2-CPU VM
  // (a process start each), plus start-up, floor and load; after that the watchdog ends the run.
  const budgetMs = 180_000 + (o.reuse ? 0 : o.devices * 1500) + (o.warmupS + o.durationS + o.floorDurationS) * 1000;
  const watchdog = setTimeout(() => {
    log(`bench: watchdog after ${Math.round(budgetMs / 1000)} s — aborting`);
    process.exit(3); // the exit hook in sim/joinkeep-server kills the server
  }, budgetMs);
  watchdog.unref();

  const loadBefore = loadavg()[0] ?? 0;
  if (loadBefore > availableParallelism() / 2) log(`bench: warning — load average ${loadBefore.toFixed(2)} on ${availableParallelism()} CPUs: other work will distort the figures`);
  log(`bench: floor — server-side join crypto in-process, one core, ${o.floorDurationS} s`);
  const floorFleet = buildFleet(Math.min(512, o.devices), o.macVersion);
  const floor = measureFloor(floorFleet, o.floorDurationS * 1000, Buffer.alloc(16, 1), Buffer.alloc(16, 2));

  const root = o.reuse ?? mkdtempSync(join(tmpdir(), 'joinkeep-bench-'));
  // With PKCS#11, the floor that matters is the same join crypto in the token (SoftHSM2): synchronously on one
  // TokenSession in this thread (the proper floor), and, for reference, one join at a time through the custody.
  let hsmFloor: FloorResult | undefined;
  let tokenFloor: TokenFloorResult | undefined;
  let tokenFloorPerUse: TokenFloorResult | undefined;
  if (o.custody === 'pkcs11') {
    useSoftHsmIn(root);
    log(`bench: floor — join crypto in SoftHSM2, synchronous on one session, on token objects (as before), ${o.floorDurationS} s`);
    tokenFloorPerUse = await measureSoftHsmFloor(floorFleet, o.floorDurationS * 1000, `bench-floor-before-${randomBytes(4).toString('hex')}`, { workingCopies: false });
    log(`bench: floor — join crypto in SoftHSM2, synchronous on one session, working copies and kept lifetime keys, ${o.floorDurationS} s`);
    tokenFloor = await measureSoftHsmFloor(floorFleet, o.floorDurationS * 1000, `bench-floor-${randomBytes(4).toString('hex')}`);
    log(`bench: floor — the same join crypto through PKCS#11 custody (worker pool), one join at a time, ${o.floorDurationS} s`);
    const { openPkcs11Custody } = await import('../src/custody/pkcs11/index.js');
    const custody = await openPkcs11Custody({ modulePath: softhsmModule(), tokens: [createToken(`bench-custody-${randomBytes(4).toString('hex')}`)] });
    try {
      hsmFloor = await measureCustodyFloor(custody, floorFleet, o.floorDurationS * 1000);
    } finally {
      await custody.close();
    }
  }
  let config: Configuration | undefined;
  try {
    config = await openConfiguration({
      root, devices: o.devices, macVersion: o.macVersion, reuse: o.reuse !== undefined, profileDir: o.profileDir,
      storage: { kind: o.storage, postgresUrl: o.postgresUrl, custody: o.custody, tokens: o.tokens },
      provisionParallelism: o.provisionParallelism, processes: o.processes,
    }, log);
    const prov = config.provisioned;
    const loadShape = { concurrency: o.concurrency, warmupMs: o.warmupS * 1000, durationMs: o.durationS * 1000, rate: o.rate, timeoutMs: 10_000 };
    const joinLoad: JoinLoad = { ...loadShape, style: o.style, verifyEvery: o.verifyEvery, maxRate: o.maxRate };
    log(`bench: load — from its own process, ${o.rate === undefined ? `${o.concurrency} in flight` : `${o.rate}/s offered, at most ${o.concurrency} in flight`}, ${o.warmupS} s warm-up, ${o.durationS} s measured, ${o.processes} server process(es)`);
    // With PKCS#11, the server's HSM counters over the measured part (read when the warm-up ends, and at the end).
    const serverUrl = config.server.url;
    let metricsAtWarm: Promise<Scraped> | undefined;
    const { load, serverCpuS, groupCommits } = await config.measure(joinLoad, () => {
      if (o.custody === 'pkcs11') metricsAtWarm = new Promise<Scraped>((resolve, reject) => setTimeout(() => scrape(serverUrl).then(resolve, reject), o.warmupS * 1000));
    });
    const metrics1 = metricsAtWarm ? await scrape(serverUrl) : undefined;
    const metrics0 = await metricsAtWarm;
    const clientCpuS = load.cpuS;
    await config.close();
    // With PKCS#11, the same load on the software keystore in the same run (fresh devices, same storage and layout).
    let softwareLoad: LoadResult | undefined;
    if (o.custody === 'pkcs11' && !o.reuse) {
      const softwareRoot = join(root, 'software-keystore');
      mkdirSync(softwareRoot);
      log(`bench: the same load on the software keystore`);
      const software = await openConfiguration({
        root: softwareRoot, devices: o.devices, macVersion: o.macVersion,
        storage: { kind: o.storage, postgresUrl: o.postgresUrl, custody: 'software' },
        provisionParallelism: o.provisionParallelism, processes: o.processes,
      }, log);
      try {
        softwareLoad = (await software.measure(joinLoad)).load;
      } finally {
        await software.close();
      }
    }
    // The HTTP floors: same process layout, same load generator, same connections, same duration.
    const httpFloors: (HttpFloorResult & { name: string })[] = [];
    if (o.httpFloors) {
      for (const kind of ['empty', 'durable-sqlite'] as const) {
        log(`bench: ${httpFloorName(kind, o.processes)}`);
        httpFloors.push({ ...(await measureHttpFloor(kind, o.processes, join(root, `floor-${kind}.db`), loadShape)), name: httpFloorName(kind, o.processes) });
      }
    }
    const loadAfter = loadavg()[0] ?? 0;
    const fsyncMs = fsyncMedianMs(root);

    const e2eRate = load.joins / load.seconds;
    const softwareFloorRate = floor.joins / floor.seconds;
    const floorRate = tokenFloor ? tokenFloor.joins / tokenFloor.seconds : softwareFloorRate;
    const errorCount = errorTotal(load);
    const rows = [
      { name: `end-to-end HTTP (${o.storage}, ${o.custody}, ${o.concurrency} conns)`, joinsPerSecond: e2eRate, latency: summarise(load.latenciesNs), errors: errorCount },
      ...(softwareLoad
        ? [{ name: `end-to-end HTTP (${o.storage}, software keystore, same run)`, joinsPerSecond: softwareLoad.joins / softwareLoad.seconds, latency: summarise(softwareLoad.latenciesNs), errors: errorTotal(softwareLoad) }]
        : []),
      ...(tokenFloor ? [{ name: 'floor: join crypto in SoftHSM2, in-process, 1 core', joinsPerSecond: floorRate, latency: summarise(tokenFloor.latenciesNs), errors: 0 }] : []),
      ...(tokenFloorPerUse ? [{ name: '  same, on token objects, JSIntKey per use (before)', joinsPerSecond: tokenFloorPerUse.joins / tokenFloorPerUse.seconds, latency: summarise(tokenFloorPerUse.latenciesNs), errors: 0 }] : []),
      ...(hsmFloor ? [{ name: 'SoftHSM2 through the custody, 1 join in flight', joinsPerSecond: hsmFloor.joins / hsmFloor.seconds, latency: summarise(hsmFloor.latenciesNs), errors: 0 }] : []),
      { name: 'floor: join crypto in software, 1 core', joinsPerSecond: softwareFloorRate, latency: summarise(floor.latenciesNs), errors: 0 },
      ...httpFloors.map((f) => ({ name: f.name, joinsPerSecond: f.load.joins / f.load.seconds, latency: summarise(f.load.latenciesNs), errors: errorTotal(f.load) })),
    ];
    const loadS = o.warmupS + o.durationS;
    const ratios = [
      `ratio end-to-end / ${tokenFloor ? 'SoftHSM2 in-process ' : ''}crypto floor = ${(e2eRate / floorRate).toFixed(3)}  (floor is ${(floorRate / e2eRate).toFixed(1)}× end-to-end)`,
      ...httpFloors.map((f) => {
        const rate = f.load.joins / f.load.seconds;
        return `ratio end-to-end / ${f.kind === 'empty' ? 'empty Fastify POST' : 'POST + durable SQLite update'} floor = ${(e2eRate / rate).toFixed(3)}  (floor ${rate.toFixed(0)}/s, ${((f.cpuS / loadS / rate) * 1e3).toFixed(3)} ms server CPU per request)`;
      }),
    ];
    const machine = machineInfo();
    const out = [
      '',
      machineLine(machine),
      `host     load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after; fsync (128 B, data dir file system) median ${fsyncMs.toFixed(2)} ms`,
      `cpu      during load (warm-up + measured, ${o.warmupS + o.durationS} s): server (${o.processes} process(es)) ${serverCpuS.toFixed(2)} s, load generator ${clientCpuS.toFixed(2)} s; server CPU per join ≈ ${((serverCpuS / (o.warmupS + o.durationS)) / e2eRate * 1e3).toFixed(2)} ms`,
      ...(groupCommits ? [formatGroupCommitFigures(groupCommits, o.warmupS + o.durationS)] : []),
      `run      ${config.deviceCount} devices (${o.reuse ? 'reused' : o.macVersion}), style ${o.style}, storage ${o.storage}, custody ${o.custody}${o.custody === 'pkcs11' ? ` (${o.tokens} token(s))` : ''}, provisioning ${prov.seconds.toFixed(1)} s, accepts verified as device: ${load.verified}`,
      '',
      renderTable(rows),
      '',
      ...ratios,
      ...(tokenFloor && tokenFloorPerUse
        ? [
            '',
            'HSM work per join (PKCS#11 calls; key objects created as session / token objects, destroyed):',
            `  floor, 1.0.x join        ${perJoin(tokenFloor.legacyJoin, 1)}`,
            `  floor, 1.1 join          ${perJoin(tokenFloor.lorawan11Join, 1)}`,
            `  floor, mix (measured)    ${perJoin(tokenFloor.counters, tokenFloor.joins)}`,
            `  before: 1.0.x join       ${perJoin(tokenFloorPerUse.legacyJoin, 1)}`,
            `  before: 1.1 join         ${perJoin(tokenFloorPerUse.lorawan11Join, 1)}`,
            ...(metrics0 && metrics1 ? [`  server, mix (${metrics1.joins - metrics0.joins} joins after warm-up)  ${perJoin(diffScrape(metrics1, metrics0), metrics1.joins - metrics0.joins)}`] : []),
          ]
        : []),
      ...(errorCount > 0 ? ['', 'errors:', ...Object.entries(load.errors).map(([k, v]) => `  ${v} × ${k}`)] : []),
    ];
    process.stdout.write(`${out.join('\n')}\n`);
    if (o.json) writeFileSync(o.json, `${JSON.stringify({ options: o, machine, loadBefore, loadAfter, fsyncMs, serverCpuS, clientCpuS, groupCommits, rows, ratio: e2eRate / floorRate, httpFloors: httpFloors.map((f) => ({ kind: f.kind, perSecond: f.load.joins / f.load.seconds, cpuS: f.cpuS, ratio: e2eRate / (f.load.joins / f.load.seconds) })), errors: load.errors, provisionSeconds: prov.seconds }, null, 2)}\n`);
    if (errorCount > 0) process.exitCode = 1;
  } finally {
    await config?.close();
    if (o.keep || o.reuse) log(`bench: kept ${root} (measure again with --reuse ${root})`);
    else rmSync(root, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
}

function perJoin(c: Pkcs11Counters, joins: number): string {
  const per = (n: number): string => (joins > 0 ? (n / joins).toFixed(2) : '-');
  const top = Object.entries(c.calls).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([f, n]) => `${f} ${per(n)}`).join(', ');
  return `calls ${per(totalCalls(c))}; objects ${per(c.sessionObjectsCreated)} / ${per(c.tokenObjectsCreated)}, destroyed ${per(c.objectsDestroyed)}  (${top})`;
}

interface Scraped extends Pkcs11Counters {
  /** Successful JoinReq answers so far. */
  readonly joins: number;
}

/** The server's PKCS#11 counters and successful joins, from its /metrics (served on the backend listener). */
async function scrape(url: string): Promise<Scraped> {
  const text = await (await fetch(new URL('/metrics', url))).text();
  const value = (re: RegExp): number => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  const calls: Record<string, number> = {};
  for (const m of text.matchAll(/^joinkeep_pkcs11_calls_total\{function="(\w+)"\} (\S+)$/gm)) calls[m[1]!] = Number(m[2]);
  return {
    calls: calls as Pkcs11Counters['calls'],
    sessionObjectsCreated: value(/^joinkeep_pkcs11_objects_total\{event="created_session"\} (\S+)$/gm),
    tokenObjectsCreated: value(/^joinkeep_pkcs11_objects_total\{event="created_token"\} (\S+)$/gm),
    objectsDestroyed: value(/^joinkeep_pkcs11_objects_total\{event="destroyed"\} (\S+)$/gm),
    joins: value(/^joinkeep_backend_requests_total\{[^}]*message_type="JoinReq"[^}]*result="Success"[^}]*\} (\S+)$/gm),
  };
}

function diffScrape(a: Scraped, b: Scraped): Pkcs11Counters {
  return {
    calls: Object.fromEntries(Object.entries(a.calls).map(([f, n]) => [f, n - (b.calls[f as keyof typeof b.calls] ?? 0)])) as Pkcs11Counters['calls'],
    sessionObjectsCreated: a.sessionObjectsCreated - b.sessionObjectsCreated,
    tokenObjectsCreated: a.tokenObjectsCreated - b.tokenObjectsCreated,
    objectsDestroyed: a.objectsDestroyed - b.objectsDestroyed,
  };
}

main().catch((e: unknown) => {
  log(`bench: ${(e as Error).message}`);
  process.exitCode = 2;
});
