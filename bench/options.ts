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
    .option('--verify-every <n>', 'check every n-th accept as the device (0 = never)', int(0, 1_000_000), 16)
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
