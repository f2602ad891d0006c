import { closeSync, existsSync, fchmodSync, fsyncSync, mkdirSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import QRCode from 'qrcode';
import { CommissioningError } from './errors.js';
import type { Manifest, ManifestEntry } from './manifest.js';

/*
 * Device labels: the QR code of each device's TR005 string (what a buyer scans to claim it), as PNG, or as SVG with
 * a caption a person can read and type (DevEUI, serial number, claim code in groups of four). Labels carry claim
 * codes, which are secrets until the device is claimed: files are created new, mode 0600, never overwritten.
 */

export const labelFormats = ['svg', 'png'] as const;
export type LabelFormat = (typeof labelFormats)[number];

/** Error correction M (15% of the symbol may be lost): the usual level for printed product labels. */
const QR_OPTIONS = { errorCorrectionLevel: 'M', margin: 4 } as const;
/** Printed size of one QR module in the SVG (0.5 mm: a TR005 code with a claim code is about 20–25 mm wide). */
const MODULE_MM = 0.5;

/** A PNG of the QR code alone; `scale` pixels per module. */
export async function labelPng(qr: string, scale = 8): Promise<Buffer> {
  return QRCode.toBuffer(qr, { ...QR_OPTIONS, type: 'png', scale });
}

/** An SVG label: the QR code with the device's caption under it. */
export async function labelSvg(entry: LabelEntry): Promise<string> {
  const { size, body } = await qrSvg(entry.qr);
  const lines = captionLines(entry);
  const longest = Math.max(...lines.map((l) => l.length));
  // Monospace glyphs are about 0.6 em wide: the caption fits the QR code's width, and is never larger than 3 modules.
  const fontSize = round(Math.min(3, (size - 2) / (0.6 * longest)));
  const lineHeight = round(fontSize * 1.3);
  const height = round(size + lines.length * lineHeight + 2);
  const text = lines
    .map((line, i) => `<text x="${size / 2}" y="${round(size + (i + 1) * lineHeight - 0.3 * fontSize)}">${xmlText(line)}</text>`)
    .join('');
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<svg xmlns="http://www.w3.org/2000/svg" width="${round(size * MODULE_MM)}mm" height="${round(height * MODULE_MM)}mm" viewBox="0 0 ${size} ${height}">` +
    `<title>${xmlText(`LoRaWAN device ${entry.devEui}`)}</title>` +
    `<rect width="${size}" height="${height}" fill="#ffffff"/>` +
    `<svg x="0" y="0" width="${size}" height="${size}" viewBox="0 0 ${size} ${size}" shape-rendering="crispEdges">${body}</svg>` +
    `<g font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="${fontSize}" text-anchor="middle" fill="#000000">${text}</g>` +
    `</svg>\n`
  );
}

/** What a label shows; a manifest entry with a QR code. */
export type LabelEntry = Pick<ManifestEntry, 'devEui' | 'serialNumber' | 'claimCode'> & { readonly qr: string };

/** The caption lines of an SVG label. */
export function captionLines(entry: Pick<ManifestEntry, 'devEui' | 'serialNumber' | 'claimCode'>): string[] {
  return [
    `DevEUI ${entry.devEui}`,
    ...(entry.serialNumber === undefined ? [] : [`S/N ${entry.serialNumber}`]),
    ...(entry.claimCode === undefined ? [] : [`Claim ${groupedForPrint(entry.claimCode)}`]),
  ];
}

export interface WrittenLabels {
  readonly dir: string;
  readonly files: readonly string[];
}

/**
 * Renders one label per manifest device into `dir` (created, mode 0700, if missing) as `<DevEUI>.svg` or `.png`.
 * All or none: every file is checked absent first, each is created with O_EXCL and mode 0600 and fsynced, and
 * on any failure the files this call created are removed again. Files are written one at a time, so a manifest
 * of 100,000 devices never holds more than one descriptor open.
 */
export async function writeManifestLabels(manifest: Manifest, dir: string, format: LabelFormat): Promise<WrittenLabels> {
  const entries = manifest.entries.map((e) => {
    if (e.qr === undefined) throw new CommissioningError('INVALID_INPUT', `${e.row} (DevEUI ${e.devEui}): no QR content (the manifest has neither a qr column nor joinEui and claimCode to build one)`);
    return { ...e, qr: e.qr };
  });
  const paths = entries.map((e) => join(dir, `${e.devEui}.${format}`));
  const existing = paths.find((p) => existsSync(p));
  if (existing !== undefined) throw exists(existing);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const created: string[] = [];
  try {
    for (const [i, e] of entries.entries()) {
      const path = paths[i]!;
      const content = format === 'png' ? await labelPng(e.qr) : await labelSvg(e);
      writeNew(path, content);
      created.push(path);
    }
  } catch (error) {
    for (const path of created) {
      try {
        unlinkSync(path);
      } catch {
        // gone already
      }
    }
    throw error;
  }
  return { dir, files: created };
}

function writeNew(path: string, content: string | Uint8Array): void {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw exists(path);
    throw error;
  }
  try {
    fchmodSync(fd, 0o600); // exactly this mode, whatever the umask
    const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(path);
    throw error;
  }
  closeSync(fd);
}

/** The QR code as the library renders it in SVG: its module count with the quiet zone, and its drawing. */
async function qrSvg(qr: string): Promise<{ size: number; body: string }> {
  const svg = await QRCode.toString(qr, { ...QR_OPTIONS, type: 'svg' });
  const m = /^<svg [^>]*viewBox="0 0 (\d+) \1"[^>]*>(.*)<\/svg>\s*$/s.exec(svg);
  if (m === null) throw new Error('qrcode rendered an SVG this module does not recognise');
  return { size: Number(m[1]), body: m[2]! };
}

/** The claim code as printed: groups of four (as `batch seal` prints it), however the manifest spelled it. */
function groupedForPrint(code: string): string {
  const plain = code.toUpperCase().replace(/[\s-]/g, '');
  return plain.match(/.{1,4}/g)?.join('-') ?? plain;
}

function exists(path: string): CommissioningError {
  return new CommissioningError('CONFLICT', `${path} already exists; refusing to overwrite a label (choose an empty directory)`);
}

/** Text content for XML: escaped, and the control characters XML 1.0 cannot carry shown as '?'. */
function xmlText(text: string): string {
  return text
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '?')
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
