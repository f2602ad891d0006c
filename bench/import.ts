import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import pino from 'pino';
import { initDataDir } from '../src/app/init.js';
import { openJoinkeep } from '../src/app/joinkeep.js';
import { importSealedBatch } from '../src/provisioning/batch-import.js';
import { addMaker } from '../src/provisioning/makers.js';
import { generateDevices, generateMakerKey, sealBatch, wipeKeys } from '../src/provisioning/sealed-batch/index.js';

/*
 * Sealed batch import, timed as an operator meets it (docs/performance.md, "Sealed batch import"): a maker seals N
 * generated devices to a fresh data directory's receiving key (in this process, with the maker tool's code), then
 * Joinkeep imports the batch: signature check, schema check, batch key unwrapped, every root key unwrapped into
 * custody, inventory and audit written in one transaction. Software keystore on SQLite (synchronous=FULL).
 *
 *   node dist/bench/import.js --devices 100000 [--mac-version 1.1]
 */

const int = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new InvalidArgumentError('an integer 1…1,000,000');
  return n;
};
const o = new Command('bench-import')
  .option('--devices <n>', 'devices in the batch', int, 100_000)
  .option('--mac-version <v>', 'LoRaWAN version of the devices (1.1: two root keys each)', '1.0.3')
  .parse()
  .opts<{ devices: number; macVersion: string }>();

const root = mkdtempSync(join(tmpdir(), 'joinkeep-bench-import-'));
try {
  const dataDir = join(root, 'data');
  await initDataDir(dataDir, {});
  const jk = await openJoinkeep(dataDir, { logger: pino({ level: 'warn' }) });
  try {
    const receiving = await jk.custody.createReceivingKey();
    const maker = await generateMakerKey('ES256');
    await addMaker({ storage: jk.storage, audit: jk.audit, actor: 'bench' }, { name: 'bench-maker', kind: 'device-maker', publicJwk: maker.publicJwk });

    let t = performance.now();
    const devices = generateDevices({ count: o.devices, devEuiStart: '70B3D57E00000000', joinEui: '70B3D57ED0000001', macVersion: o.macVersion });
    const file = await sealBatch({
      recipientJwk: receiving.jwk as never,
      signingKey: maker.privateJwk,
      maker: 'bench-maker',
      content: { kind: 'device-keys', devices: devices.map((d) => ({ devEui: d.devEui, joinEui: d.joinEui, macVersion: d.macVersion, appKey: d.appKey!, ...(d.nwkKey ? { nwkKey: d.nwkKey } : {}) })) },
    });
    wipeKeys(devices);
    const sealS = (performance.now() - t) / 1000;

    const cpu0 = process.cpuUsage();
    t = performance.now();
    const report = await importSealedBatch({ storage: jk.storage, custody: jk.custody, actor: 'bench' }, file);
    const importS = (performance.now() - t) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const keys = o.devices * (o.macVersion === '1.1' ? 2 : 1);
    const lines = [
      `machine  ${availableParallelism()} CPUs, ${cpus()[0]?.model ?? '?'}; Node ${process.version}; load average ${loadavg()[0]?.toFixed(2)}`,
      `batch    ${o.devices.toLocaleString('en')} devices (LoRaWAN ${o.macVersion}, ${keys.toLocaleString('en')} root keys), ${(file.length / 1e6).toFixed(1)} MB sealed`,
      `seal     ${sealS.toFixed(1)} s (maker side, in this process)`,
      `import   ${importS.toFixed(1)} s: ${Math.round(o.devices / importS).toLocaleString('en')} devices/s, CPU ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s; ${report.devices.toLocaleString('en')} devices in the inventory`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await jk.close();
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
