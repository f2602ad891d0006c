import type { Command } from 'commander';
import { UsageError, dataDirOf, print, withJoinkeep } from '../context.js';
import { type TokenFlags, addTokenOptions, pkcs11Custody } from '../pkcs11-options.js';

export function registerCustody(program: Command): void {
  const custody = program.command('custody').description('where the keys are kept');
  addTokenOptions(
    custody
      .command('migrate')
      .description('move every key from the software keystore into PKCS#11 tokens; keys travel only wrapped')
      .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)'),
    { moduleRequired: true },
  )
    .option('--trusted-keks', 'refused: keys that arrive wrapped cannot become trusted KEKs (see docs/operations.md)')
    .action(async (o: TokenFlags & { dataDir?: string }) => {
      if (o.trustedKeks) {
        throw new UsageError(
          'custody migrate cannot move into trusted-KEK mode: KEKs leave the software keystore only wrapped, and an unwrapped KEK can never become trusted. Migrate without --trusted-keks, or create a new data directory with `init --trusted-keks` and add the KEKs from their key files',
        );
      }
      const dataDir = dataDirOf(o);
      const target = pkcs11Custody({ ...o, custody: 'pkcs11' })!;
      const [{ migrateToPkcs11 }, { createLogger }, { default: pino }] = await Promise.all([import('../../app/migrate-custody.js'), import('../../observability/logger.js'), import('pino')]);
      const r = await migrateToPkcs11(dataDir, target, { logger: createLogger({ level: 'warn', destination: pino.destination(2) }) });
      process.stdout.write(
        `Moved ${r.migrated.length} key(s) into ${target.tokens.map((t) => `"${t.label}"`).join(', ')}` +
          (r.alreadyPresent.length ? ` (${r.alreadyPresent.length} already there from an earlier run)` : '') +
          `; ${r.verified} checked against the software keystore. ${dataDir} now uses PKCS#11 and the sealed copies are gone from the database.\n` +
          `The master key no longer protects anything: destroy ${dataDir}/master.key and its backups.\n` +
          (r.retiredReceivingKeys.length
            ? `${r.retiredReceivingKeys.length} receiving key(s) of the software keystore were retired, not moved: create one in the HSM with \`joinkeep receiving-key create\` and publish it to your makers again.\n`
            : ''),
      );
    });
  custody
    .command('inventory')
    .description('list every key in custody: handle, usage, where it is kept and its protection attributes — never values')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; json?: boolean }) => {
      const keys = await withJoinkeep(o, async (jk) => ({ kind: jk.custody.kind, keys: await jk.custody.listKeys() }));
      const rows = keys.keys.map((k) => ({ handle: k.handle, usage: k.usage, createdAt: k.createdAt.toISOString(), location: k.location ?? keys.kind, attributes: k.attributes ?? {} }));
      print(!!o.json, { custody: keys.kind, keys: rows }, () =>
        rows
          .map((r) => `${r.handle}\t${r.usage}\t${r.createdAt}\t${r.location}\t${Object.entries(r.attributes).map(([a, v]) => `${a}=${v}`).join(' ')}`)
          .join('\n') || 'No keys.',
      );
    });
  custody
    .command('status')
    .description('check custody now: each HSM token of the pool opened, probed and compared with the others')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; json?: boolean }) => {
      const status = await withJoinkeep(o, async (jk) => {
        await jk.custody.probe?.();
        return { kind: jk.custody.kind, members: jk.custody.status?.().members ?? [] };
      });
      const members = status.members.map((m) => ({ member: m.name, state: m.state, reason: m.lastError ?? null }));
      print(!!o.json, { custody: status.kind, members }, () =>
        members.length === 0 ? `${status.kind}: ready` : members.map((m) => `${m.member}\t${m.state}${m.reason ? `\t${m.reason}` : ''}`).join('\n'),
      );
      if (members.some((m) => m.state !== 'up')) process.exitCode = 1;
    });
}
