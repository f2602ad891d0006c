import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SimulatedDevice } from '../sim/device.js';
import { addFleet } from '../sim/add-fleet.js';
import { BENCH_NET_ID } from './fleet.js';
import { runJoinkeep } from '../sim/joinkeep-cli.js';
import { createToken, softhsmModule, useSoftHsmIn } from './softhsm.js';
import pino from 'pino';
import { openJoinkeep } from '../src/app/joinkeep.js';

/**
 * A data directory provisioned as an operator would: `joinkeep init`, `kek add` and `peer add-*` through the CLI,
 * then every device through the same provisioning service `joinkeep device add` calls (root keys as KeyEnvelopes
 * under the import KEK), in this process rather than one CLI process per device.
 */

export interface Provisioned {
  /** Temporary root holding data/ and secrets/; remove it when done. */
  readonly root: string;
  readonly dataDir: string;
  readonly nsToken: string;
  readonly nsKek: { readonly label: string; readonly key: Buffer };
  readonly asKek: { readonly label: string; readonly key: Buffer };
  readonly asId: string;
  readonly seconds: number;
}

export interface StorageChoice {
  readonly kind: 'sqlite' | 'postgres';
  readonly postgresUrl?: string | undefined;
  /** Keys in a SoftHSM2 token over PKCS#11 instead of the software keystore. */
  readonly custody?: 'software' | 'pkcs11';
  /** PKCS#11: tokens in the server's pool (every key on each). */
  readonly tokens?: number;
}

/** A data directory set up as an operator does it through the CLI, before any device: what the benchmarks need of it. */
export interface OperatorSetup {
  readonly dataDir: string;
  readonly nsToken: string;
  readonly nsKek: { readonly label: string; readonly key: Buffer };
  readonly asKek: { readonly label: string; readonly key: Buffer };
  readonly importKek: { readonly label: string; readonly key: Buffer };
  readonly asId: string;
}

/** `joinkeep init`, `kek add` ×3, `peer add-ns`, `peer add-as` through the CLI, in `root`/data; peers' files in `root`/secrets. */
export async function setUpDataDir(root: string, storage: StorageChoice): Promise<OperatorSetup> {
  // `root` is this run's temporary directory: data/ is created by `joinkeep init`, secrets/ holds the peers' files.
  const dataDir = join(root, 'data');
  const secrets = join(root, 'secrets');
  mkdirSync(secrets, { mode: 0o700 });
  const file = (name: string, content: string): string => {
    const p = join(secrets, name);
    writeFileSync(p, `${content}\n`, { mode: 0o600 });
    return p;
  };
  const importKek = { label: 'bench-import', key: randomBytes(16) };
  const nsKek = { label: `ns-${BENCH_NET_ID}`, key: randomBytes(16) };
  const asKek = { label: 'as-bench', key: randomBytes(16) };
  const nsToken = randomBytes(32).toString('hex');
  const asToken = randomBytes(32).toString('hex');
  const asId = 'bench-as';

  const custodyArgs: string[] = [];
  if (storage.custody === 'pkcs11') {
    useSoftHsmIn(root);
    custodyArgs.push('--custody', 'pkcs11', '--pkcs11-module', softhsmModule());
    for (let i = 0; i < (storage.tokens ?? 1); i++) {
      const token = createToken(`bench-server-${i}`);
      custodyArgs.push('--token-label', token.label, '--pin-file', file(`token-${i}.pin`, token.pin));
    }
  }
  await runJoinkeep(['init', '--data-dir', dataDir, ...(storage.kind === 'postgres' ? ['--storage', 'postgres', '--postgres-url', storage.postgresUrl ?? ''] : []), ...custodyArgs], dataDir);
  for (const k of [importKek, nsKek, asKek]) {
    await runJoinkeep(['kek', 'add', '--data-dir', dataDir, '--label', k.label, '--key-file', file(`${k.label}.hex`, k.key.toString('hex'))], dataDir);
  }
  await runJoinkeep(['peer', 'add-ns', '--data-dir', dataDir, '--net-id', BENCH_NET_ID, '--token-file', file('ns.token', nsToken), '--kek-label', nsKek.label], dataDir);
  await runJoinkeep(['peer', 'add-as', '--data-dir', dataDir, '--as-id', asId, '--token-file', file('as.token', asToken), '--kek-label', asKek.label], dataDir);
  return { dataDir, nsToken, nsKek, asKek, importKek, asId };
}

export async function provision(root: string, fleet: readonly SimulatedDevice[], storage: StorageChoice, parallelism: number, progress: (done: number) => void): Promise<Provisioned> {
  const started = Date.now();
  const { dataDir, nsToken, nsKek, asKek, importKek, asId } = await setUpDataDir(root, storage);

  const jk = await openJoinkeep(dataDir, { logger: pino({ level: 'warn' }), env: storage.kind === 'postgres' ? { ...process.env, JOINKEEP_POSTGRES_URL: storage.postgresUrl } : process.env });
  try {
    await addFleet(jk, fleet, { importKek, homeNetId: BENCH_NET_ID, asId, actor: 'bench', parallelism, progress });
  } finally {
    await jk.close();
  }
  return { root, dataDir, nsToken, nsKek, asKek, asId, seconds: (Date.now() - started) / 1000 };
}
