import { basename, extname } from 'node:path';
import { Command } from 'commander';
import { wrapEnvelope } from '../key-envelope.js';
import { readKeyFile } from '../key-material.js';

/** The factory-side step: wrap a device root key under the Join Server's import KEK (RFC 3394). */
export function wrapCommand(): Command {
  return new Command('wrap')
    .description('print a TS002 KeyEnvelope: KEY wrapped (RFC 3394) under KEK, for `joinkeep device add --app-key/--nwk-key`')
    .requiredOption('--kek-file <file>', 'the import KEK (the key given to `joinkeep kek add`)')
    .requiredOption('--key-file <file>', 'the root key to wrap')
    .option('--label <label>', 'KEKLabel, as given to `joinkeep kek add --label` (default: KEK file name without extension)')
    .action((o: { kekFile: string; keyFile: string; label?: string }) => {
      const label = o.label ?? basename(o.kekFile, extname(o.kekFile));
      const env = wrapEnvelope({ label, key: readKeyFile(o.kekFile, 'KEK file') }, readKeyFile(o.keyFile, 'key file'));
      process.stdout.write(`${JSON.stringify(env)}\n`);
    });
}
