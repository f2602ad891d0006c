import type { Command } from 'commander';
import { addKek, addWrappedKek, parseKekText } from '../../provisioning/keks.js';
import { UsageError, print, readSecretFile, withJoinkeep } from '../context.js';

export function registerKek(program: Command): void {
  const kek = program.command('kek').description('key-encryption keys agreed with peers (values never shown)');
  kek
    .command('add')
    .description('add a KEK: from a file holding 32 hex digits, or wrapped under a KEK already added (--envelope)')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .requiredOption('--label <label>', 'KEK label, as it appears in KeyEnvelopes')
    .option('--key-file <file>', 'file with the KEK as hex')
    .option('--envelope <json>', 'the KEK as a TS002 KeyEnvelope {"KEKLabel":"…","AESKey":"…"}, unwrapped only inside custody')
    .action(async (o: { dataDir?: string; label: string; keyFile?: string; envelope?: string }) => {
      if ((o.keyFile === undefined) === (o.envelope === undefined)) throw new UsageError('give exactly one of --key-file or --envelope');
      const deps = (jk: { custody: Parameters<typeof addKek>[0]['custody']; audit: Parameters<typeof addKek>[0]['audit'] }) => ({ custody: jk.custody, audit: jk.audit, actor: 'cli' });
      if (o.envelope !== undefined) {
        const envelope = o.envelope;
        await withJoinkeep(o, (jk) => addWrappedKek(deps(jk), o.label, envelope));
      } else {
        const key = parseKekText(await readSecretFile(o.keyFile!, '--key-file'), `--key-file ${o.keyFile}`);
        await withJoinkeep(o, (jk) => addKek(deps(jk), o.label, key));
      }
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
