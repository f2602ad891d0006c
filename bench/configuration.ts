import type { SimulatedDevice } from '../sim/device.js';
import { type RunningServer, startServer } from '../sim/joinkeep-server.js';
import { buildFleet, type MacMix } from './fleet.js';
import { loadFleet, saveFleet } from './fleet-file.js';
import { type GroupCommitFigures, groupCommitFigures, scrapeGroupCommits } from './group-commit-figures.js';
import type { LoadShape } from './http-floor.js';
import { type LoadResult, runLoad } from './load.js';
import { assertLoopbackUrl } from './options.js';
import { type Provisioned, type StorageChoice, provision } from './provision.js';

/*
 * One benchmark configuration (storage × custody × process layout): a run directory provisioned as an operator
 * would (bench/provision.ts), `joinkeep serve` started on loopback as its own process, and any number of
 * measurements against that one server, each driven by its own load-generator process (bench/load.ts).
 * Shared by `npm run bench` (bench/join.ts) and `npm run bench:table` (bench/matrix.ts).
 */

export interface ConfigurationSpec {
  /** The run directory: data/ and secrets/ go here (or, with `reuse`, were put here by an earlier run). */
  readonly root: string;
  readonly devices: number;
  readonly macVersion: MacMix;
  readonly storage: StorageChoice;
  readonly provisionParallelism: number;
  /** `joinkeep serve --processes`. */
  readonly processes: number;
  /** Measure again a directory provisioned with --keep, without provisioning. */
  readonly reuse?: boolean;
  /** Run the server under node --cpu-prof, profiles written here. */
  readonly profileDir?: string | undefined;
}

export interface JoinLoad extends LoadShape {
  readonly style: 'tts' | 'chirpstack';
  readonly verifyEvery: number;
  readonly maxRate: number;
}

export interface JoinMeasurement {
  readonly load: LoadResult;
  /** Server CPU seconds (all its processes) over warm-up + measurement. */
  readonly serverCpuS: number;
  /** The server's durable writes over warm-up + measurement (one server process only: /metrics of that process). */
  readonly groupCommits?: GroupCommitFigures | undefined;
}

export interface Configuration {
  readonly provisioned: Provisioned;
  readonly deviceCount: number;
  readonly server: RunningServer;
  /** One load run against the running server. `onStarted` fires when the load generator starts its clock. */
  measure(load: JoinLoad, onStarted?: () => void): Promise<JoinMeasurement>;
  close(): Promise<void>;
}

export async function openConfiguration(spec: ConfigurationSpec, log: (line: string) => void): Promise<Configuration> {
  let provisioned: Provisioned;
  let fleet: SimulatedDevice[];
  if (spec.reuse) {
    ({ provisioned, fleet } = loadFleet(spec.root));
    log(`bench: reusing ${spec.root}: ${fleet.length} devices provisioned earlier in ${provisioned.seconds.toFixed(1)} s`);
  } else {
    fleet = buildFleet(spec.devices, spec.macVersion);
    const custody = spec.storage.custody ?? 'software';
    log(`bench: provisioning ${spec.devices} devices (${spec.macVersion}; ${spec.storage.kind}, ${custody}), ${spec.provisionParallelism} at a time, in ${spec.root}`);
    let lastShown = 0;
    provisioned = await provision(spec.root, fleet, spec.storage, spec.provisionParallelism, (n) => {
      if (n - lastShown >= 250 || n === spec.devices) { lastShown = n; log(`  ${n}/${spec.devices}`); }
    });
  }
  // The load generator reads the fleet from here and saves the devices' counters back after each run:
  // from now on the file, not `fleet`, holds the devices' state.
  saveFleet(provisioned, fleet);
  log(`bench: provisioned in ${provisioned.seconds.toFixed(1)} s; starting joinkeep serve`);
  const server = await startServer(provisioned.dataDir, {
    args: ['--processes', String(spec.processes)],
    ...(spec.profileDir ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${spec.profileDir}`] } : {}),
  });
  assertLoopbackUrl(server.url);
  return {
    provisioned,
    deviceCount: fleet.length,
    server,
    async measure(load, onStarted = () => undefined) {
      const { style, verifyEvery, maxRate, ...shape } = load;
      let cpu0 = 0;
      // With several processes the backend port's /metrics is one worker's: no figures rather than a part of them.
      const scrape = async () => (spec.processes === 1 ? scrapeGroupCommits(server.url) : undefined);
      const commitsBefore = await scrape();
      const result = await runLoad({ ...shape, url: server.url, work: { kind: 'joins', fleetRoot: provisioned.root, style, verifyEvery, maxRate } }, () => {
        cpu0 = server.cpuSeconds();
        onStarted();
      });
      const serverCpuS = server.cpuSeconds() - cpu0;
      const commitsAfter = await scrape();
      const groupCommits = commitsBefore && commitsAfter ? groupCommitFigures(commitsBefore, commitsAfter) : undefined;
      return { load: result, serverCpuS, groupCommits };
    },
    close: () => server.stop(),
  };
}
