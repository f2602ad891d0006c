import cluster, { type Worker } from 'node:cluster';
import Fastify, { type FastifyInstance } from 'fastify';
import { AggregatorRegistry, type Registry } from 'prom-client';
import { type AdminSource, type CustodyHealth, addAdminRoutes } from '../backend/server.js';
import { type Logger, createLogger } from '../observability/logger.js';
import { parseListen } from './config.js';
import { AppError } from './errors.js';
import { openJoinkeep } from './joinkeep.js';
import { type Running, serve } from './serve.js';

/*
 * `joinkeep serve --processes N`: N worker processes (node:cluster) share the Backend Interfaces port, each with
 * its own storage connection and custody. Nothing about nonces is shared in memory: every worker reserves nonces
 * through the database exactly as separate `serve` processes do (SQLite: BEGIN IMMEDIATE on the one WAL file;
 * PostgreSQL: the device's row lock), so the guarantees of docs/storage.md hold across workers unchanged.
 *
 * The primary process holds no keys and no database connection while serving: it checks the data directory once
 * (configuration, migrations, custody) before forking, hands connections to workers (cluster's round-robin), replaces
 * a worker that dies, answers /metrics with every serving worker's registry added up (prom-client's aggregation, over
 * our own IPC messages), and stops them all on stop().
 * A worker whose primary disappears (even by SIGKILL) sees its IPC channel close and stops itself: no orphans.
 */

/** IPC messages between the primary and its workers. */
type WorkerMessage =
  | { readonly joinkeep: 'ready'; readonly url: string }
  | { readonly joinkeep: 'metrics?'; readonly id: number }
  | { readonly joinkeep: 'health'; readonly id: number; readonly members: readonly HealthMember[] }
  | { readonly joinkeep: 'registry'; readonly id: number; readonly metrics: MetricsJson };
type PrimaryMessage =
  | { readonly joinkeep: 'metrics'; readonly id: number; readonly text?: string; readonly error?: string }
  | { readonly joinkeep: 'health?'; readonly id: number }
  | { readonly joinkeep: 'registry?'; readonly id: number };
type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;
type HealthMember = { readonly name: string; readonly state: string };

export interface ClusterOptions {
  readonly processes: number;
  readonly listen?: string | undefined;
  readonly adminListen?: string | undefined;
  readonly logger?: Logger;
  /** Script and arguments each worker runs (default: this process's own); it must call serveClusterWorker. */
  readonly exec?: string;
  readonly args?: readonly string[];
  /** How long stop() waits for workers to finish their requests before killing them. */
  readonly stopTimeoutMs?: number;
}

export interface RunningCluster {
  /** Bound address of the shared Backend Interfaces listener. */
  readonly url: string;
  readonly adminUrl?: string | undefined;
  /** Process ids of the workers serving now. */
  workerPids(): number[];
  /** Settles when the cluster gave up (workers dying faster than they can be replaced); never on stop(). */
  readonly failed: Promise<Error>;
  stop(): Promise<void>;
}

const WORKER_INDEX_ENV = 'JOINKEEP_WORKER_INDEX';
/** More unexpected worker exits than this within RESTART_WINDOW_MS and the primary stops everything. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;

export function isClusterWorker(): boolean {
  return cluster.isWorker;
}

/** In the primary: checks the data directory, forks `processes` workers and waits until each one serves. */
export async function serveCluster(dataDir: string, options: ClusterOptions): Promise<RunningCluster> {
  if (!Number.isInteger(options.processes) || options.processes < 1) {
    throw new AppError('CONFIG_INVALID', `--processes must be a positive integer, got ${options.processes}`);
  }
  const logger = options.logger ?? createLogger();
  // Configuration, migrations and custody are checked once here, so a broken data directory fails the command
  // instead of N workers in a restart loop; the primary keeps nothing open afterwards.
  const checked = await openJoinkeep(dataDir, { logger });
  await checked.close();
  const adminListen = options.adminListen ?? checked.config.admin?.listen;

  cluster.setupPrimary({ exec: options.exec ?? process.argv[1], args: [...(options.args ?? process.argv.slice(2))] });
  let stopping = false;
  const restarts: number[] = [];
  let giveUp!: (error: Error) => void;
  const failed = new Promise<Error>((resolve) => (giveUp = resolve));
  /** Every live worker, serving or starting. */
  const forked = new Set<Worker>();
  /** Workers that said they serve: only they are asked for metrics and health. */
  const workers = new Set<Worker>();
  const waiters = new Map<number, (message: WorkerMessage) => void>();
  let nextId = 1;
  /** Asks every serving worker; one that does not answer within 2 s is left out of this answer. */
  const askWorkers = <T>(question: (id: number) => PrimaryMessage, answer: (m: WorkerMessage) => T | undefined): Promise<T[]> =>
    Promise.all(
      [...workers].map(
        (w) =>
          new Promise<T | undefined>((resolve) => {
            const id = nextId++;
            const timer = setTimeout(() => {
              waiters.delete(id);
              resolve(undefined);
            }, 2_000);
            waiters.set(id, (m) => {
              clearTimeout(timer);
              waiters.delete(id);
              resolve(answer(m));
            });
            send(w, question(id));
          }),
      ),
    ).then((all) => all.filter((a): a is Awaited<T> => a !== undefined) as T[]);
  // Counters and histograms summed over workers, gauges by prom-client's per-metric rule (sum unless it says otherwise).
  const metricsText = async (): Promise<string> =>
    AggregatorRegistry.aggregate(await askWorkers((id) => ({ joinkeep: 'registry?', id }), (m) => (m.joinkeep === 'registry' ? m.metrics : undefined))).metrics();

  const onMessage = (worker: Worker, message: WorkerMessage): void => {
    if (message.joinkeep === 'metrics?') {
      metricsText().then(
        (text) => send(worker, { joinkeep: 'metrics', id: message.id, text }),
        (error: unknown) => send(worker, { joinkeep: 'metrics', id: message.id, error: (error as Error).message }),
      );
    } else if (message.joinkeep === 'health' || message.joinkeep === 'registry') {
      waiters.get(message.id)?.(message);
    }
  };

  const fork = (index: number): Promise<{ worker: Worker; url: string }> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(index) });
      forked.add(worker);
      let ready = false;
      worker.on('message', (message: WorkerMessage) => {
        if (message?.joinkeep === 'ready' && !ready) {
          ready = true;
          workers.add(worker);
          resolve({ worker, url: message.url });
        } else if (typeof message?.joinkeep === 'string') onMessage(worker, message);
      });
      worker.once('exit', (code, signal) => {
        workers.delete(worker);
        forked.delete(worker);
        if (!ready) {
          reject(new AppError('CONFIG_INVALID', `serve worker ${index} exited before serving (${signal ?? `code ${code}`})`));
          return;
        }
        if (stopping) return;
        logger.error({ worker: index, pid: worker.process.pid, code, signal }, 'serve worker exited; starting a replacement');
        const now = Date.now();
        restarts.push(now);
        while (restarts.length > 0 && restarts[0]! < now - RESTART_WINDOW_MS) restarts.shift();
        if (restarts.length > MAX_RESTARTS) {
          giveUp(new AppError('CONFIG_INVALID', `serve workers exited ${restarts.length} times within ${RESTART_WINDOW_MS / 1000} s; giving up`));
          return;
        }
        fork(index).catch((error: unknown) => giveUp(error as Error));
      });
    });

  const stopWorkers = async (): Promise<void> => {
    stopping = true;
    const all = [...forked];
    await Promise.all(
      all.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            const kill = setTimeout(() => w.process.kill('SIGKILL'), options.stopTimeoutMs ?? 10_000);
            w.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            // The worker's own SIGTERM handler closes its listener, finishes in-flight requests, closes storage and custody.
            w.process.kill('SIGTERM');
          }),
      ),
    );
  };

  let url: string;
  try {
    // The first worker binds the port; the others share its handle (cluster keys handles by the requested address,
    // so port 0 gives every worker the same free port).
    const first = await fork(0);
    url = first.url;
    await Promise.all(Array.from({ length: options.processes - 1 }, (_, i) => fork(i + 1)));
  } catch (error) {
    await stopWorkers();
    throw error;
  }

  let admin: FastifyInstance | undefined;
  let adminUrl: string | undefined;
  if (adminListen !== undefined) {
    // Each worker holds its own custody: a pool member is reported in its worst state across workers.
    // With no worker serving (all being replaced), the instance is unavailable whatever the custody.
    const health: CustodyHealth = async () =>
      workers.size === 0
        ? [{ name: 'workers', state: 'down' }]
        : worstState(await askWorkers((id) => ({ joinkeep: 'health?', id }), (m) => (m.joinkeep === 'health' ? m.members : undefined)));
    admin = Fastify() as unknown as FastifyInstance;
    addAdminRoutes(admin, { contentType: AggregatorRegistry.PROMETHEUS_CONTENT_TYPE, metrics: metricsText, custody: health });
    try {
      adminUrl = await admin.listen(parseListen(adminListen, '--admin-listen'));
    } catch (error) {
      await stopWorkers();
      throw error;
    }
  }
  logger.info({ url, adminUrl, processes: options.processes, pids: [...workers].map((w) => w.process.pid) }, 'Joinkeep is serving the Backend Interfaces');
  return {
    url,
    adminUrl,
    failed,
    workerPids: () => [...forked].flatMap((w) => (w.process.pid === undefined || w.isDead() ? [] : [w.process.pid])),
    async stop() {
      await admin?.close();
      await stopWorkers();
    },
  };
}

/**
 * In a worker: serves as a single `serve` does, on the shared port. /metrics on the Backend Interfaces listener (when
 * there is no admin listener) answers with every worker's metrics summed, fetched from the primary.
 */
export async function serveClusterWorker(dataDir: string, options: { listen?: string | undefined; adminListen?: string | undefined; apiListen?: string | undefined; logger?: Logger }): Promise<Running> {
  const index = Number(process.env[WORKER_INDEX_ENV] ?? 0);
  const logger = (options.logger ?? createLogger()).child({ worker: index });
  const pending = new Map<number, { resolve: (text: string) => void; reject: (error: Error) => void }>();
  let nextId = 1;
  let running: Running | undefined;
  let registry: Registry | undefined;
  process.on('message', (message: PrimaryMessage) => {
    if (message?.joinkeep === 'metrics') {
      const p = pending.get(message.id);
      pending.delete(message.id);
      if (message.text !== undefined) p?.resolve(message.text);
      else p?.reject(new Error(message.error ?? 'metrics unavailable'));
    } else if (message?.joinkeep === 'registry?') {
      void registry?.getMetricsAsJSON().then((metrics) => process.send?.({ joinkeep: 'registry', id: message.id, metrics } satisfies WorkerMessage));
    } else if (message?.joinkeep === 'health?') {
      const members = running?.custodyHealth?.() ?? [];
      process.send?.({ joinkeep: 'health', id: message.id, members: members.map((m) => ({ name: m.name, state: m.state })) } satisfies WorkerMessage);
    }
  });
  const admin: AdminSource = {
    contentType: AggregatorRegistry.PROMETHEUS_CONTENT_TYPE,
    metrics: () =>
      new Promise<string>((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject });
        process.send?.({ joinkeep: 'metrics?', id } satisfies WorkerMessage);
      }),
  };
  running = await serve(dataDir, {
    listen: options.listen,
    adminListen: options.adminListen,
    // Every worker listens on the API port too; node:cluster shares it between them.
    apiListen: options.apiListen,
    // The primary serves the admin listener (from --admin-listen or joinkeep.json), with every worker's metrics.
    adminListener: false,
    admin,
    onMetrics: (r) => (registry = r),
    logger,
  });
  process.send?.({ joinkeep: 'ready', url: running.url } satisfies WorkerMessage);
  return running;
}

function send(worker: Worker, message: PrimaryMessage): void {
  if (!worker.isDead() && worker.isConnected()) worker.send(message);
}

const severity: Record<string, number> = { up: 0, inconsistent: 1, down: 2 };

function worstState(answers: readonly (readonly HealthMember[])[]): HealthMember[] {
  const byName = new Map<string, HealthMember>();
  for (const members of answers) {
    for (const m of members) {
      const seen = byName.get(m.name);
      if (seen === undefined || (severity[m.state] ?? 3) > (severity[seen.state] ?? 3)) byName.set(m.name, m);
    }
  }
  return [...byName.values()];
}
