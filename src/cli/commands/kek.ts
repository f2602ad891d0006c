import type { Command } from 'commander';
import { addKek, parseKekText } from '../../provisioning/keks.js';
import { print, readSecretFile, withJoinkeep } from '../context.js';

export function registerKek(program: Command): void {
  const kek = program.command('kek').description('key-encryption keys agreed with peers (values never shown)');
  kek
    .command('add')
    .description('add a KEK from a file holding 32 hex digits')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .requiredOption('--label <label>', 'KEK label, as it appears in KeyEnvelopes')
    .requiredOption('--key-file <file>', 'file with the KEK as hex')
    .action(async (o: { dataDir?: string; label: string; keyFile: string }) => {
      const key = parseKekText(await readSecretFile(o.keyFile, '--key-file'), `--key-file ${o.keyFile}`);
      await withJoinkeep(o, (jk) => addKek({ custody: jk.custody, audit: jk.audit, actor: 'cli' }, o.label, key));
      process.stdout.write(`Added KEK "${o.label}".\n`);
    });
  kek
    .command('list')
    .description('list KEK labels')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; json?: boolean }) => {
      const keks = await withJoinkeep(o, async (jk) => (await jk.custody.listKeys()).filter((k) => k.usage === 'kek'));
      const rows = keks.map((k) => ({ label: k.handle.replace(/^kek\//, ''), createdAt: k.createdAt.toISOString() }));
      print(!!o.json, rows, () => rows.map((r) => `${r.label}\t${r.createdAt}`).join('\n') || 'No KEKs.');
    });
}
