import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { CONFIG_FILE } from '../../app/config.js';
import type { Running } from '../../app/serve.js';
import { DATA_DIR_ENV, UsageError, dataDirOf } from '../context.js';

/** Serves until SIGINT/SIGTERM (or `until` settles), then stops; resolves with what `until` gave, if anything. */
async function runUntilSignal<T>(running: Pick<Running, 'stop'>, until?: Promise<T>): Promise<T | undefined> {
  return new Promise<T | undefined>((resolve) => {
    const stop = (value?: T) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      running.stop().then(() => resolve(value), () => resolve(value));
    };
    const onSignal = () => stop();
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    until?.then((value) => stop(value));
  });
}

/** `--processes`: a positive integer, or `auto` for one per CPU. */
function parseProcesses(value: string): number | 'auto' {
  if (value === 'auto') return 'auto';
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new UsageError(`--processes expects a positive integer or auto, got ${value}`);
  return n;
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve the Backend Interfaces (JoinReq, RejoinReq, AppSKeyReq, HomeNSReq) and /metrics')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--listen <host:port>', 'Backend Interfaces listener (default: from joinkeep.json, 127.0.0.1:8090)')
    .option('--admin-listen <host:port>', 'separate listener for /metrics and /healthz')
    .option('--api-listen <host:port>', 'REST API listener, /api/v1 (default: joinkeep.json api.listen; off when neither)')
    .option('--processes <n|auto>', 'worker processes sharing the listener (auto: one per CPU)', '1')
    .action(async (o: { dataDir?: string; listen?: string; adminListen?: string; apiListen?: string; processes: string }) => {
      const dataDir = dataDirOf(o);
      const { isClusterWorker, serveCluster, serveClusterWorker } = await import('../../app/cluster.js');
      if (isClusterWorker()) {
        const running = await serveClusterWorker(dataDir, { listen: o.listen, adminListen: o.adminListen, apiListen: o.apiListen });
        // A Ctrl-C reaches the whole process group and the primary then relays SIGTERM: a second signal must not
        // cut this worker's in-flight requests short (the primary SIGKILLs it if it never finishes).
        for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => undefined);
        // The primary went away (even by SIGKILL): stop too, never linger as an orphan.
        const orphaned = new Promise<void>((resolve) => process.once('disconnect', resolve));
        await runUntilSignal(running, orphaned);
        process.disconnect?.();
        return;
      }
      const requested = parseProcesses(o.processes);
      const processes = requested === 'auto' ? availableParallelism() : requested;
      if (processes === 1) {
        const { serve } = await import('../../app/serve.js');
        await runUntilSignal(await serve(dataDir, { listen: o.listen, adminListen: o.adminListen, apiListen: o.apiListen }));
        return;
      }
      const running = await serveCluster(dataDir, { processes, listen: o.listen, adminListen: o.adminListen });
      const failure = await runUntilSignal(running, running.failed);
      if (failure !== undefined) throw failure;
    });
  program
    .command('start')
    .description('quick start: create the data directory on embedded defaults if needed (./data), then serve')
    .option('--data-dir <dir>', `data directory (default: $${DATA_DIR_ENV} or ./data)`)
    .option('--listen <host:port>', 'Backend Interfaces listener')
    .action(async (o: { dataDir?: string; listen?: string }) => {
      const dataDir = o.dataDir ?? process.env[DATA_DIR_ENV] ?? 'data';
      const initialised = await stat(join(dataDir, CONFIG_FILE)).then(() => true, () => false);
      const [{ initDataDir }, { serve }] = await Promise.all([import('../../app/init.js'), import('../../app/serve.js')]);
      if (!initialised) {
        await initDataDir(dataDir);
        process.stderr.write(`Created data directory ${dataDir} (SQLite + software keystore). Back up ${dataDir}/master.key.\n`);
      }
      await runUntilSignal(await serve(dataDir, { listen: o.listen }));
    });
}
