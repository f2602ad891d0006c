import { rmSync } from 'node:fs';
import { Command } from 'commander';
import { writeRandomKeyFile } from '../key-material.js';

export function keygenCommand(): Command {
  return new Command('keygen')
    .description('write a random AES-128 key (32 hex digits) to FILE, mode 0600')
    .argument('<file>', 'key file to create')
    .option('--force', 'replace an existing file')
    .action((file: string, o: { force?: boolean }) => {
      if (o.force) rmSync(file, { force: true });
      writeRandomKeyFile(file);
      process.stdout.write(`wrote a random 128-bit key to ${file} (mode 0600)\n`);
    });
}
