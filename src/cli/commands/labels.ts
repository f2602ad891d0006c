import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { type LabelFormat, labelFormats, writeManifestLabels } from '../../commissioning/labels.js';
import { parseManifest } from '../../commissioning/manifest.js';
import { UsageError, print } from '../context.js';

/*
 * `joinkeep labels`: one QR label per device of a maker's manifest (as `batch seal` writes it). Needs no data
 * directory: it reads the manifest and writes files, nothing else.
 */

export function registerLabels(program: Command): void {
  program
    .command('labels')
    .description('write a QR code label (TR005) for each device of a manifest; labels carry claim codes: files are mode 0600, never overwritten')
    .requiredOption('--manifest <file>', 'the manifest (CSV or JSON) written by `joinkeep batch seal`')
    .requiredOption('--out <dir>', 'directory for the labels (created if missing); one <DevEUI>.svg or .png per device')
    .option('--format <format>', 'svg (QR code with DevEUI, serial number and claim code under it) or png (QR code only)', 'svg')
    .option('--json', 'print JSON')
    .action(async (o: { manifest: string; out: string; format: string; json?: boolean }) => {
      if (!(labelFormats as readonly string[]).includes(o.format)) throw new UsageError(`--format must be ${labelFormats.join(' or ')}`);
      const text = await readFile(o.manifest, 'utf8').catch(() => {
        throw new UsageError(`--manifest ${o.manifest} cannot be read`);
      });
      const written = await writeManifestLabels(parseManifest(text, o.manifest), o.out, o.format as LabelFormat);
      print(o.json === true, { dir: written.dir, format: o.format, labels: written.files.length }, () => `Wrote ${written.files.length} ${o.format.toUpperCase()} label(s) to ${written.dir} (mode 0600: they carry claim codes).`);
    });
}
