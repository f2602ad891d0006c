import type { Command } from 'commander';
import { dataDirOf, UsageError } from '../context.js';
import { type TokenFlags, addTokenOptions, collect, pkcs11Custody } from '../pkcs11-options.js';

export function registerInit(program: Command): void {
  addTokenOptions(
    program
      .command('init')
    .description('create a data directory: configuration, master key (0600) and database')
    .option('--data-dir <dir>', 'data directory to create (or JOINKEEP_DATA_DIR)')
    .option('--storage <kind>', 'sqlite (embedded default) or postgres', 'sqlite')
    .option('--postgres-url <url>', 'PostgreSQL URL (or JOINKEEP_POSTGRES_URL at run time, to keep passwords out of the file)')
    .option('--master-key-env <name>', 'read the master key from this environment variable instead of a file')
    .option('--listen <host:port>', 'Backend Interfaces listener', '127.0.0.1:8090')
    .option('--custody <kind>', 'software (embedded default) or pkcs11 (keys in an HSM)', 'software'),
  )
    .option('--trusted-keks', 'PKCS#11: session keys are wrapped only under KEKs the Security Officer marked trusted (kek add needs the SO PIN)')
    .option('--so-pin-file <file>', 'with --trusted-keks: file holding the Security Officer PIN of the matching --token-label', collect, [])
    .option('--so-pin-env <var>', 'with --trusted-keks: environment variable holding the Security Officer PIN of the matching --token-label', collect, [])
    .action(async (o: TokenFlags & { dataDir?: string; storage: string; postgresUrl?: string; masterKeyEnv?: string; listen: string; custody: string }) => {
      const dataDir = dataDirOf(o);
      const pkcs11 = pkcs11Custody(o);
      if (o.storage !== 'sqlite' && o.storage !== 'postgres') throw new UsageError('--storage must be sqlite or postgres');
      if (o.postgresUrl !== undefined && /^[a-z]+:\/\/[^/@]*:[^/@]*@/i.test(o.postgresUrl)) {
        process.stderr.write('joinkeep: warning: the PostgreSQL URL contains a password and will be written to joinkeep.json; prefer setting JOINKEEP_POSTGRES_URL when Joinkeep runs\n');
      }
      const storage = o.storage === 'sqlite' ? ({ kind: 'sqlite', path: 'joinkeep.db' } as const) : ({ kind: 'postgres', url: o.postgresUrl } as const);
      const { initDataDir } = await import('../../app/init.js');
      const config = await initDataDir(dataDir, { storage, masterKeyEnv: o.masterKeyEnv, listen: o.listen, pkcs11 });
      const c = config.custody;
      const custody =
        c.kind === 'pkcs11'
          ? `keys in PKCS#11 token${c.tokens.length > 1 ? 's' : ''} ${c.tokens.map((t) => `"${t.label}"`).join(', ')}${c.trustedKeks ? ', trusted-KEK mode (add KEKs with `joinkeep kek add --key-file`, which logs in as the Security Officer)' : ''}`
          : 'file' in c.masterKey
            ? `software keystore, master key in ${dataDir}/${c.masterKey.file} (0600) — back it up; without it no key can be opened`
            : `software keystore, master key from $${c.masterKey.env}`;
      process.stdout.write(`Initialised ${dataDir}: ${config.storage.kind} storage, ${custody}.\n`);
    });
}
