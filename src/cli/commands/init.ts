import type { Command } from 'commander';
import { dataDirOf, UsageError } from '../context.js';

export function registerInit(program: Command): void {
  program
    .command('init')
    .description('create a data directory: configuration, master key (0600) and database')
    .option('--data-dir <dir>', 'data directory to create (or JOINKEEP_DATA_DIR)')
    .option('--storage <kind>', 'sqlite (embedded default) or postgres', 'sqlite')
    .option('--postgres-url <url>', 'PostgreSQL URL (or JOINKEEP_POSTGRES_URL at run time, to keep passwords out of the file)')
    .option('--master-key-env <name>', 'read the master key from this environment variable instead of a file')
    .option('--listen <host:port>', 'Backend Interfaces listener', '127.0.0.1:8090')
    .action(async (o: { dataDir?: string; storage: string; postgresUrl?: string; masterKeyEnv?: string; listen: string }) => {
      const dataDir = dataDirOf(o);
      if (o.storage !== 'sqlite' && o.storage !== 'postgres') throw new UsageError('--storage must be sqlite or postgres');
      if (o.postgresUrl !== undefined && /^[a-z]+:\/\/[^/@]*:[^/@]*@/i.test(o.postgresUrl)) {
        process.stderr.write('joinkeep: warning: the PostgreSQL URL contains a password and will be written to joinkeep.json; prefer setting JOINKEEP_POSTGRES_URL when Joinkeep runs\n');
      }
      const storage = o.storage === 'sqlite' ? ({ kind: 'sqlite', path: 'joinkeep.db' } as const) : ({ kind: 'postgres', url: o.postgresUrl } as const);
      const { initDataDir } = await import('../../app/init.js');
      const config = await initDataDir(dataDir, { storage, masterKeyEnv: o.masterKeyEnv, listen: o.listen });
      const key = 'file' in config.custody.masterKey ? `master key in ${dataDir}/${config.custody.masterKey.file} (0600) — back it up; without it no key can be opened` : `master key from $${config.custody.masterKey.env}`;
      process.stdout.write(`Initialised ${dataDir}: ${config.storage.kind} storage, software keystore, ${key}.\n`);
    });
}
