import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DOMParser, onWarningStopParsing } from '@xmldom/xmldom';
import jsqr from 'jsqr';
import { PNG } from 'pngjs';
import QRCode from 'qrcode';
import { CommissioningError } from '../../src/commissioning/errors.js';
import { captionLines, labelPng, labelSvg, writeManifestLabels } from '../../src/commissioning/labels.js';
import { parseManifest } from '../../src/commissioning/manifest.js';
import { type Eui64, parseDeviceQr } from '../../src/protocol/index.js';
import { generateClaimCode, manifestCsv, manifestJson, manifestRows } from '../../src/provisioning/sealed-batch/index.js';
import { runCli, tempRoot } from '../helpers/cli-run.js';

/*
 * Labels are checked the way a buyer's phone reads them: each PNG is decoded by a real QR decoder (jsQR) and must
 * give back the device's TR005 string exactly, checksum included. SVG labels must be well-formed XML (a strict
 * parser that stops at any warning), embed the QR code exactly as the library draws it, and carry the caption.
 */

const eui = (s: string) => s as Eui64;
const devices = [
  // A serial number with XML's special characters: it is in the QR code and must be escaped in the caption.
  { devEui: eui('70B3D57ED0000001'), joinEui: eui('70B3D57ED0000000'), macVersion: '1.0.3' as const, serialNumber: 'A&B<1>', claimCode: generateClaimCode() },
  { devEui: eui('70B3D57ED0000002'), joinEui: eui('70B3D57ED0000000'), macVersion: '1.1' as const, serialNumber: 'SN 2', claimCode: generateClaimCode() },
  { devEui: eui('70B3D57ED0000003'), joinEui: eui('70B3D57ED0000000'), macVersion: '1.1' as const, claimCode: generateClaimCode() },
];
const rows = manifestRows(devices, 'A1B2C3D4');
const manifest = parseManifest(manifestJson({ batchId: 'b1', kind: 'device-keys', maker: 'acme', createdAt: '2025-01-01T00:00:00.000Z' }, rows));

// jsqr is CommonJS with an ESM-style .d.ts: under NodeNext its function is the module's `default` property.
const jsQR = jsqr.default;

function decodePng(bytes: Buffer): string | undefined {
  const png = PNG.sync.read(bytes);
  return jsQR(new Uint8ClampedArray(png.data.buffer, png.data.byteOffset, png.data.byteLength), png.width, png.height)?.data;
}

function parseSvg(text: string) {
  return new DOMParser({ onError: onWarningStopParsing }).parseFromString(text, 'image/svg+xml');
}

const pathsOf = (doc: ReturnType<typeof parseSvg>) => Array.from(doc.getElementsByTagName('path')).map((p) => `${p.getAttribute('fill') ?? ''}|${p.getAttribute('stroke') ?? ''}|${p.getAttribute('d') ?? ''}`);

describe('commissioning / labels', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ root, cleanup } = await tempRoot('joinkeep-labels-')));
  after(() => cleanup());

  it('PNG / a QR decoder reads back the TR005 string, checksum and claim code included', async () => {
    for (const r of rows) {
      const text = decodePng(await labelPng(r.qr));
      assert.equal(text, r.qr);
      assert.equal(parseDeviceQr(text).ownerToken, r.claimCode.replace(/-/g, ''));
    }
  });

  it('SVG / well-formed, the QR code as the library draws it, caption with DevEUI, serial number and grouped claim code', async () => {
    const entry = manifest.entries[0]!;
    const svg = await labelSvg({ ...entry, qr: entry.qr! });
    const doc = parseSvg(svg);
    assert.equal(doc.documentElement?.nodeName, 'svg');
    assert.deepEqual(pathsOf(doc), pathsOf(parseSvg(await QRCode.toString(entry.qr!, { type: 'svg', errorCorrectionLevel: 'M', margin: 4 }))));
    const texts = Array.from(doc.getElementsByTagName('text')).map((t) => t.textContent);
    assert.deepEqual(texts, ['DevEUI 70B3D57ED0000001', 'S/N A&B<1>', `Claim ${devices[0]!.claimCode}`]);
    assert.match(svg, /S\/N A&amp;B&lt;1&gt;/);
  });

  it('caption / the claim code is grouped by four however the manifest wrote it; lines left out when absent', () => {
    assert.deepEqual(captionLines({ devEui: eui('70B3D57ED0000003'), claimCode: 'abcdefghjkmnpqrs' }), ['DevEUI 70B3D57ED0000003', 'Claim ABCD-EFGH-JKMN-PQRS']);
    assert.deepEqual(captionLines({ devEui: eui('70B3D57ED0000003') }), ['DevEUI 70B3D57ED0000003']);
  });

  it('SVG / control characters in a serial number do not break the XML', async () => {
    const svg = await labelSvg({ devEui: eui('70B3D57ED0000001'), serialNumber: 'A\u0001B', qr: rows[0]!.qr });
    assert.ok(parseSvg(svg).documentElement);
  });

  for (const format of ['png', 'svg'] as const) {
    it(`directory / one ${format} per device, named by DevEUI, mode 0600, decodable`, async () => {
      const dir = join(root, `labels-${format}`);
      const written = await writeManifestLabels(manifest, dir, format);
      assert.deepEqual((await readdir(dir)).sort(), devices.map((d) => `${d.devEui}.${format}`));
      assert.equal(written.files.length, devices.length);
      for (const [i, d] of devices.entries()) {
        const path = join(dir, `${d.devEui}.${format}`);
        assert.equal((await stat(path)).mode & 0o777, 0o600, path);
        const bytes = await readFile(path);
        if (format === 'png') assert.equal(decodePng(bytes), rows[i]!.qr);
        else assert.ok(parseSvg(bytes.toString('utf8')).getElementsByTagName('text').length >= 2);
      }
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
    });
  }

  it('directory / refuses to overwrite: one existing label stops the run before anything is written', async () => {
    const dir = join(root, 'partial');
    await mkdir(dir);
    await writeFile(join(dir, '70B3D57ED0000002.png'), 'old');
    await assert.rejects(writeManifestLabels(manifest, dir, 'png'), (e: unknown) => e instanceof CommissioningError && e.code === 'CONFLICT' && /70B3D57ED0000002\.png already exists/.test(e.message));
    assert.deepEqual(await readdir(dir), ['70B3D57ED0000002.png']);
    assert.equal(await readFile(join(dir, '70B3D57ED0000002.png'), 'utf8'), 'old');
  });
});

describe('cli / joinkeep labels', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ root, cleanup } = await tempRoot('joinkeep-labels-cli-')));
  after(() => cleanup());

  it('writes PNG labels for the maker\'s CSV manifest without a data directory; refuses a second run (exit 1)', async () => {
    const file = join(root, 'manifest.csv');
    await writeFile(file, manifestCsv(rows), { mode: 0o600 });
    const out = join(root, 'out');
    const r = await runCli(['labels', '--manifest', file, '--out', out, '--format', 'png', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { dir: out, format: 'png', labels: 3 });
    for (const [i, d] of devices.entries()) assert.equal(decodePng(await readFile(join(out, `${d.devEui}.png`))), rows[i]!.qr);
    const again = await runCli(['labels', '--manifest', file, '--out', out, '--format', 'png']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists; refusing to overwrite/);
  });

  it('SVG is the default; a bad manifest names the row; a bad --format is a usage error (exit 2)', async () => {
    const file = join(root, 'manifest.json');
    await writeFile(file, manifestJson({ batchId: 'b1', kind: 'device-keys', maker: 'acme', createdAt: 't' }, rows));
    const r = await runCli(['labels', '--manifest', file, '--out', join(root, 'svg')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Wrote 3 SVG label/);
    const bad = join(root, 'bad.csv');
    await writeFile(bad, 'devEui,claimCode\r\nnot-an-eui,ABCD\r\n');
    const refused = await runCli(['labels', '--manifest', bad, '--out', join(root, 'bad')]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /bad\.csv line 2: devEui is not an EUI-64/);
    const usage = await runCli(['labels', '--manifest', file, '--out', join(root, 'x'), '--format', 'pdf']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--format must be svg or png/);
  });
});
