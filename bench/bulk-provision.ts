import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import { openJoinkeep } from '../src/app/joinkeep.js';
import { importSealedBatch } from '../src/provisioning/batch-import.js';
import { bindInventoryDevices } from '../src/provisioning/bind.js';
import { addMaker } from '../src/provisioning/makers.js';
import { generateMakerKey, sealBatch } from '../src/provisioning/sealed-batch/index.js';
import { BENCH_JOIN_EUI, BENCH_NET_ID, type MacMix } from './fleet.js';
import { type SeededFleet, saveSeededFleet, seededDevice } from './fleet-file.js';
import { assertLoopbackUrl } from './options.js';
import { type Provisioned, type StorageChoice, setUpDataDir } from './provision.js';

/*
 * A data directory with up to 1,000,000 devices, provisioned through the production path: the operator's CLI set-up
 * (init, KEKs, peers), then a maker seals the devices' root keys to the Join Server's receiving key in batches of
 * `chunk` devices (the maker tool's sealBatch), Joinkeep imports each with importSealedBatch (signature, schema, every
 * root key unwrapped into custody, inventory and audit in one transaction), and the operator binds each batch to the
 * bench's home network and application server (bindInventoryDevices, as `joinkeep device bind --batch`). Software
 * keystore, SQLite or PostgreSQL.
 *
 * The devices are a seeded fleet (bench/fleet-file.ts): the fleet file holds a seed, not a million keys, and the load
 * generator derives each device's keys from it. The Join Server side holds them exactly as production does.
 *
 *   node dist/bench/bulk-provision.js --devices 1000000 [--chunk 100000] [--dir DIR] [--mac-version mix]
 */

export interface BulkSpec {
  readonly devices: number;
  /** Devices per sealed batch. */
  readonly chunk: number;
  readonly mix: MacMix;
  readonly storage: StorageChoice;
  /** First DevEUI (hex); device i gets base + i. */
  readonly devEuiBase?: string;
}

export interface BulkTimings {
  /** CLI set-up: init, KEKs, peers (process starts included). */
  readonly setupS: number;
  /** Maker side: keys derived, wrapped under a batch key, signed. */
  readonly sealS: number;
  /** importSealedBatch, every chunk. */
  readonly importS: number;
  /** bindInventoryDevices, every chunk. */
  readonly bindS: number;
  readonly totalS: number;
}

export interface BulkProvisioned {
  readonly provisioned: Provisioned;
  readonly seeded: SeededFleet;
  readonly timings: BulkTimings;
}

export async function bulkProvision(root: string, spec: BulkSpec, progress: (done: number, t: BulkTimings) => void = () => undefined): Promise<BulkProvisioned> {
  const t0 = performance.now();
  const setup = await setUpDataDir(root, spec.storage);
  const setupS = (performance.now() - t0) / 1000;
  const seeded: SeededFleet = { seed: randomBytes(32).toString('hex'), count: spec.devices, devEuiBase: spec.devEuiBase ?? 'B1C0000000000000', joinEui: BENCH_JOIN_EUI, mix: spec.mix };
  let sealS = 0;
  let importS = 0;
  let bindS = 0;
  const jk = await openJoinkeep(setup.dataDir, {
    logger: pino({ level: 'warn' }),
    env: spec.storage.kind === 'postgres' ? { ...process.env, JOINKEEP_POSTGRES_URL: spec.storage.postgresUrl } : process.env,
  });
  try {
    const receiving = await jk.custody.createReceivingKey();
    const maker = await generateMakerKey('ES256');
    await addMaker({ storage: jk.storage, audit: jk.audit, actor: 'bench' }, { name: 'bench-maker', kind: 'device-maker', publicJwk: maker.publicJwk });
    for (let from = 0; from < spec.devices; from += spec.chunk) {
      const count = Math.min(spec.chunk, spec.devices - from);
      let t = performance.now();
      const devices = Array.from({ length: count }, (_, j) => {
        const d = seededDevice(seeded, from + j);
        return { devEui: d.devEui, joinEui: d.joinEui, macVersion: d.macVersion, appKey: d.appKey, ...(d.nwkKey ? { nwkKey: d.nwkKey } : {}) };
      });
      const batchId = randomUUID();
      const file = await sealBatch({ recipientJwk: receiving.jwk as never, signingKey: maker.privateJwk, maker: 'bench-maker', batchId, content: { kind: 'device-keys', devices } });
      sealS += (performance.now() - t) / 1000;
      t = performance.now();
      await importSealedBatch({ storage: jk.storage, custody: jk.custody, actor: 'bench' }, file);
      importS += (performance.now() - t) / 1000;
      t = performance.now();
      await bindInventoryDevices({ storage: jk.storage, actor: 'bench' }, { batchId, homeNetId: BENCH_NET_ID, asId: setup.asId });
      bindS += (performance.now() - t) / 1000;
      progress(from + count, { setupS, sealS, importS, bindS, totalS: (performance.now() - t0) / 1000 });
    }
  } finally {
    await jk.close();
  }
  const totalS = (performance.now() - t0) / 1000;
  const provisioned: Provisioned = { root, dataDir: setup.dataDir, nsToken: setup.nsToken, nsKek: setup.nsKek, asKek: setup.asKek, asId: setup.asId, seconds: totalS };
  saveSeededFleet(provisioned, seeded);
  return { provisioned, seeded, timings: { setupS, sealS, importS, bindS, totalS } };
}

export function formatTimings(devices: number, t: BulkTimings): string {
  const rate = (s: number): string => `${Math.round(devices / s).toLocaleString('en')}/s`;
  return [
    `set-up   ${t.setupS.toFixed(1)} s (joinkeep init, kek add ×3, peer add-ns, peer add-as: CLI processes)`,
    `seal     ${t.sealS.toFixed(1)} s (maker side: keys from the seed, wrapped, signed; ${rate(t.sealS)})`,
    `import   ${t.importS.toFixed(1)} s (importSealedBatch: verify, unwrap into custody, inventory + audit; ${rate(t.importS)})`,
    `bind     ${t.bindS.toFixed(1)} s (bindInventoryDevices per batch; ${rate(t.bindS)})`,
    `total    ${t.totalS.toFixed(1)} s for ${devices.toLocaleString('en')} devices`,
  ].join('\n');
}

const int = (min: number, max: number) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`an integer ${min}…${max}`);
  return n;
};

export const bulkOptions = (c: Command): Command =>
  c
    .option('--chunk <n>', 'devices per sealed batch', int(1, 1_000_000), 100_000)
    .addOption(new Option('--mac-version <v>', 'device LoRaWAN versions').choices(['1.0.3', '1.1', 'mix']).default('mix'))
    .addOption(new Option('--storage <kind>', 'Join Server storage').choices(['sqlite', 'postgres']).default('sqlite'))
    .option('--postgres-url <url>', 'PostgreSQL URL, loopback only (with --storage postgres)');

export function storageOf(o: { storage: string; postgresUrl?: string }): StorageChoice {
  if (o.storage === 'postgres') {
    if (!o.postgresUrl) throw new InvalidArgumentError('--storage postgres needs --postgres-url');
    assertLoopbackUrl(o.postgresUrl);
    return { kind: 'postgres', postgresUrl: o.postgresUrl, custody: 'software' };
  }
  return { kind: 'sqlite', custody: 'software' };
}

async function main(): Promise<void> {
  const o = bulkOptions(new Command('bench-bulk-provision').option('--devices <n>', 'devices to provision', int(1, 1_000_000), 100_000))
    .option('--dir <dir>', 'run directory to create (default: a new temporary one); measure it with bench:storm / bench:flat --reuse')
    .parse()
    .opts<{ devices: number; chunk: number; macVersion: MacMix; storage: string; postgresUrl?: string; dir?: string }>();
  const root = o.dir ?? mkdtempSync(join(tmpdir(), 'joinkeep-bulk-'));
  mkdirSync(root, { recursive: true });
  process.stderr.write(`bulk: ${o.devices.toLocaleString('en')} devices in batches of ${o.chunk.toLocaleString('en')} into ${root}\n`);
  const r = await bulkProvision(root, { devices: o.devices, chunk: o.chunk, mix: o.macVersion, storage: storageOf(o) }, (done, t) =>
    process.stderr.write(`  ${done.toLocaleString('en')} devices, ${t.totalS.toFixed(1)} s\n`),
  );
  process.stdout.write(`machine  ${availableParallelism()} CPUs, ${cpus()[0]?.model ?? '?'}; Node ${process.version}; load average ${loadavg()[0]?.toFixed(2)}\n${formatTimings(o.devices, r.timings)}\nkept     ${root} (fleet file ${join(root, 'secrets', 'fleet.json')})\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e: unknown) => {
    process.stderr.write(`bulk: ${(e as Error).message}\n`);
    process.exitCode = 2;
  });
}
