import { Command, Option } from 'commander';
import type { MacMix } from './fleet.js';

export interface BenchOptions {
  readonly devices: number;
  readonly durationS: number;
  readonly warmupS: number;
  readonly concurrency: number;
  readonly macVersion: MacMix;
  readonly storage: 'sqlite' | 'postgres';
  readonly custody: 'software' | 'pkcs11';
  /** With --custody pkcs11: SoftHSM2 tokens in the server's pool. */
  readonly tokens: number;
  readonly postgresUrl: string | undefined;
  readonly floorDurationS: number;
  readonly verifyEvery: number;
  readonly style: 'tts' | 'chirpstack';
  readonly provisionParallelism: number;
  readonly keep: boolean;
  readonly reuse: string | undefined;
  readonly profileDir: string | undefined;
  readonly json: string | undefined;
  /** `joinkeep serve --processes`, and the same layout for the HTTP floors. */
  readonly processes: number;
  /** Also measure the empty-POST and durable-update HTTP floors. */
  readonly httpFloors: boolean;
  /** Open loop at this many requests per second; undefined = closed loop at saturation. */
  readonly rate: number | undefined;
  /** The load generator prepares requests for at most this many joins per second. */
  readonly maxRate: number;
}

const int = (min: number, max: number) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new RangeError(`expected an integer ${min}..${max}, got ${v}`);
  return n;
};

export function parseBenchOptions(argv: readonly string[], cpus: number): BenchOptions {
  const o = new Command('bench-join')
    .description('Joinkeep join throughput and latency over real HTTP, against the in-process crypto floor')
    .option('--devices <n>', 'devices to provision', int(1, 100_000), 2000)
    .option('--duration <s>', 'measured load duration, seconds', int(1, 300), 10)
    .option('--warmup <s>', 'unmeasured load before it, seconds', int(0, 60), 2)
    .option('--concurrency <n>', 'requests in flight (= keep-alive connections)', int(1, 1024), 64)
    .addOption(new Option('--mac-version <v>', 'device LoRaWAN versions').choices(['1.0.3', '1.1', 'mix']).default('mix'))
    .addOption(new Option('--storage <kind>', 'Join Server storage').choices(['sqlite', 'postgres']).default('sqlite'))
    .option('--postgres-url <url>', 'PostgreSQL URL, loopback only (with --storage postgres)')
    .addOption(new Option('--custody <kind>', 'key custody: software keystore, or PKCS#11 on a fresh SoftHSM2 token').choices(['software', 'pkcs11']).default('software'))
    .option('--floor-duration <s>', 'crypto floor loop, seconds', int(1, 60), 3)
    .option('--verify-every <n>', 'check every accept of every n-th device as the NS and the device would, after the clock stops (0 = none)', int(0, 1_000_000), 16)
    .addOption(new Option('--style <style>', 'NS wire style').choices(['tts', 'chirpstack']).default('tts'))
    .option('--provision-parallelism <n>', 'devices provisioned concurrently (through the provisioning service)', int(1, 64), Math.max(2, cpus * 2))
    .option('--keep', 'keep the run directory (data, secrets, device states) for --reuse')
    .option('--reuse <dir>', 'measure again a run directory kept with --keep (skips provisioning)')
    .option('--json <file>', 'also write the results as JSON')
    .option('--profile <dir>', 'run the server with node --cpu-prof, profiles written to DIR')
    .option('--processes <n>', 'serve --processes N (and the HTTP floors with the same layout)', int(1, 64), 1)
    .option('--tokens <n>', 'with --custody pkcs11: SoftHSM2 tokens in the server\'s pool (every key on each)', int(1, 8), 1)
    .option('--no-http-floors', 'skip the empty-POST and durable-update HTTP floors')
    .option('--rate <n>', 'open loop: offer this many requests per second (default: closed loop at saturation)', int(1, 1_000_000))
    .option('--max-rate <n>', 'the load generator prepares Join-requests for at most this many joins/s', int(100, 1_000_000), 8000)
    .parse([...argv], { from: 'user' })
    .opts<Record<string, unknown>>();
  const storage = o['storage'] as 'sqlite' | 'postgres';
  const postgresUrl = o['postgresUrl'] as string | undefined;
  if (storage === 'postgres') {
    if (!postgresUrl) throw new RangeError('--storage postgres needs --postgres-url');
    assertLoopbackUrl(postgresUrl);
  }
  return {
    devices: o['devices'] as number,
    durationS: o['duration'] as number,
    warmupS: o['warmup'] as number,
    concurrency: o['concurrency'] as number,
    macVersion: o['macVersion'] as MacMix,
    storage,
    custody: o['custody'] as 'software' | 'pkcs11',
    tokens: o['tokens'] as number,
    postgresUrl,
    floorDurationS: o['floorDuration'] as number,
    verifyEvery: o['verifyEvery'] as number,
    style: o['style'] as 'tts' | 'chirpstack',
    provisionParallelism: o['provisionParallelism'] as number,
    keep: o['keep'] === true,
    reuse: o['reuse'] as string | undefined,
    json: o['json'] as string | undefined,
    profileDir: o['profile'] as string | undefined,
    processes: o['processes'] as number,
    httpFloors: o['httpFloors'] !== false,
    rate: o['rate'] as number | undefined,
    maxRate: Math.max(o['maxRate'] as number, (o['rate'] as number | undefined) ?? 0),
  };
}

/** The benchmark only ever talks to this machine. */
export function assertLoopbackUrl(url: string): void {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (!['localhost', '127.0.0.1', '::1'].includes(host) && !host.startsWith('127.')) {
    throw new RangeError(`refusing non-loopback host ${host}: the benchmark runs on loopback only`);
  }
}

/** The configurations `npm run bench:table` can measure: keystore × storage. */
export const TABLE_CONFIGURATIONS = ['software-sqlite', 'software-postgres', 'softhsm-sqlite', 'softhsm-postgres'] as const;
export type TableConfiguration = (typeof TABLE_CONFIGURATIONS)[number];

export interface TableOptions {
  readonly configurations: readonly TableConfiguration[];
  readonly devices: number;
  readonly durationS: number;
  readonly warmupS: number;
  readonly floorDurationS: number;
  readonly concurrency: number;
  /** Fixed offered loads, in percent of each configuration's saturation measured just before. */
  readonly loads: readonly number[];
  readonly macVersion: MacMix;
  readonly style: 'tts' | 'chirpstack';
  readonly verifyEvery: number;
  readonly processes: number;
  readonly provisionParallelism: number;
  readonly maxRate: number;
  /** A loopback PostgreSQL where databases may be created; undefined = start a throwaway cluster. */
  readonly postgresUrl: string | undefined;
  /** true = JSON on stdout (the table goes to stderr); a string = also write JSON to that file. */
  readonly json: string | boolean;
}

export function parseTableOptions(argv: readonly string[], cpus: number): TableOptions {
  const list = (v: string): string[] => v.split(',').map((x) => x.trim()).filter((x) => x !== '');
  const o = new Command('bench-table')
    .description('One table: joins/s and p50/p95/p99 over real HTTP per keystore × storage, at saturation and fixed offered loads, each against its floor and target')
    .option('--configurations <list>', `comma-separated, of ${TABLE_CONFIGURATIONS.join(', ')}`, TABLE_CONFIGURATIONS.join(','))
    .option('--devices <n>', 'devices provisioned per configuration', int(1, 100_000), 500)
    .option('--duration <s>', 'measured seconds per load', int(1, 300), 8)
    .option('--warmup <s>', 'unmeasured seconds before each load', int(0, 60), 2)
    .option('--floor-duration <s>', 'seconds per in-process crypto floor', int(1, 60), 3)
    .option('--concurrency <n>', 'keep-alive connections = requests in flight at saturation (cap in open loop)', int(1, 1024), 64)
    .option('--loads <percents>', 'fixed offered loads, % of the saturation just measured (open loop)', '25,50')
    .addOption(new Option('--mac-version <v>', 'device LoRaWAN versions').choices(['1.0.3', '1.1', 'mix']).default('mix'))
    .addOption(new Option('--style <style>', 'NS wire style').choices(['tts', 'chirpstack']).default('tts'))
    .option('--verify-every <n>', 'check every accept of every n-th device as the NS and the device would, after the clock stops (0 = none)', int(0, 1_000_000), 16)
    .option('--processes <n>', 'serve --processes N, and the HTTP floors with the same layout', int(1, 64), 1)
    .option('--provision-parallelism <n>', 'devices provisioned concurrently', int(1, 64), Math.max(2, cpus * 2))
    .option('--max-rate <n>', 'the load generator prepares Join-requests for at most this many joins/s at saturation', int(100, 1_000_000), 5000)
    .option('--postgres-url <url>', 'loopback PostgreSQL where throwaway databases may be created (default: start a throwaway cluster)')
    .option('--json [file]', 'JSON results: on stdout (table to stderr), or also into FILE')
    .parse([...argv], { from: 'user' })
    .opts<Record<string, unknown>>();
  const configurations = list(o['configurations'] as string).map((c) => {
    if (!(TABLE_CONFIGURATIONS as readonly string[]).includes(c)) throw new RangeError(`unknown configuration ${c}: expected ${TABLE_CONFIGURATIONS.join(', ')}`);
    return c as TableConfiguration;
  });
  const loads = list(o['loads'] as string).map((v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || n > 100) throw new RangeError(`--loads: expected percentages in (0, 100], got ${v}`);
    return n;
  });
  const postgresUrl = o['postgresUrl'] as string | undefined;
  if (postgresUrl !== undefined) assertLoopbackUrl(postgresUrl);
  return {
    configurations,
    devices: o['devices'] as number,
    durationS: o['duration'] as number,
    warmupS: o['warmup'] as number,
    floorDurationS: o['floorDuration'] as number,
    concurrency: o['concurrency'] as number,
    loads,
    macVersion: o['macVersion'] as MacMix,
    style: o['style'] as 'tts' | 'chirpstack',
    verifyEvery: o['verifyEvery'] as number,
    processes: o['processes'] as number,
    provisionParallelism: o['provisionParallelism'] as number,
    maxRate: o['maxRate'] as number,
    postgresUrl,
    json: (o['json'] as string | boolean | undefined) ?? false,
  };
}
