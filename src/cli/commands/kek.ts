import type { Command } from 'commander';
import { parseKekText } from '../../provisioning/keks.js';
import { UsageError, dataDirOf, print, readSecretFile, withJoinkeep } from '../context.js';

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
      const dataDir = dataDirOf(o);
      const [{ addKekToDataDir, addWrappedKekToDataDir }, { createLogger }, { default: pino }] = await Promise.all([import('../../app/keks.js'), import('../../observability/logger.js'), import('pino')]);
      const logger = createLogger({ level: 'warn', destination: pino.destination(2) });
      if (o.envelope !== undefined) {
        await addWrappedKekToDataDir(dataDir, o.label, o.envelope, { logger });
      } else {
        const key = parseKekText(await readSecretFile(o.keyFile!, '--key-file'), `--key-file ${o.keyFile}`);
        await addKekToDataDir(dataDir, o.label, key, { logger });
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
