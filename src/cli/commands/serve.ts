import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { CONFIG_FILE } from '../../app/config.js';
import type { Running } from '../../app/serve.js';
import { DATA_DIR_ENV, dataDirOf } from '../context.js';

async function runUntilSignal(running: Running): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      running.stop().then(resolve, resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve the Backend Interfaces (JoinReq, RejoinReq, AppSKeyReq, HomeNSReq) and /metrics')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--listen <host:port>', 'Backend Interfaces listener (default: from joinkeep.json, 127.0.0.1:8090)')
    .option('--admin-listen <host:port>', 'separate listener for /metrics and /healthz')
    .action(async (o: { dataDir?: string; listen?: string; adminListen?: string }) => {
      const { serve } = await import('../../app/serve.js');
      await runUntilSignal(await serve(dataDirOf(o), { listen: o.listen, adminListen: o.adminListen }));
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
