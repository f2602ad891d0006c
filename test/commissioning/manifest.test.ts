import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommissioningError } from '../../src/commissioning/errors.js';
import { manifestClaimItems, parseClaimManifest, parseManifest } from '../../src/commissioning/manifest.js';
import { type Eui64, formatTr005, parseDeviceQr } from '../../src/protocol/index.js';
import { generateClaimCode, manifestCsv, manifestJson, manifestRows } from '../../src/provisioning/sealed-batch/index.js';

/*
 * Manifests are made by the maker tool's own code (src/provisioning/sealed-batch/outputs.ts), with fresh claim
 * codes, so a change to what the maker writes that the buyer's side cannot read fails here.
 */

const eui = (s: string) => s as Eui64;
const devices = [
  { devEui: eui('70B3D57ED0000001'), joinEui: eui('70B3D57ED0000000'), macVersion: '1.0.3' as const, serialNumber: 'SN-1', profile: 'th, v2', claimCode: generateClaimCode() },
  { devEui: eui('70B3D57ED0000002'), joinEui: eui('70B3D57ED0000000'), macVersion: '1.1' as const, serialNumber: 'SN 2', claimCode: generateClaimCode() },
  { devEui: eui('70B3D57ED0000003'), joinEui: eui('70B3D57ED0000000'), macVersion: '1.1' as const, claimCode: generateClaimCode() },
];
const rows = manifestRows(devices, 'A1B2C3D4');
const csv = manifestCsv(rows);
const json = manifestJson({ batchId: 'batch-1', kind: 'device-keys', maker: 'acme-sensors', createdAt: '2025-01-01T00:00:00.000Z' }, rows);
const expectedItems = devices.map((d) => ({ devEui: d.devEui, claimCode: d.claimCode }));

const invalid = (message: RegExp) => (e: unknown) => e instanceof CommissioningError && e.code === 'INVALID_INPUT' && message.test(e.message);
const csvLines = csv.split('\r\n');
/** The maker's CSV with line `n` (1-based, header is 1) replaced. */
const csvWith = (n: number, line: string) => csvLines.map((l, i) => (i === n - 1 ? line : l)).join('\r\n');

describe('commissioning / manifest / what the maker tool writes', () => {
  it('CSV / every device with its claim code as printed', () => {
    assert.deepEqual(parseClaimManifest(csv), expectedItems);
  });

  it('JSON / every device with its claim code; batch id and maker from the header', () => {
    const m = parseManifest(json);
    assert.equal(m.batchId, 'batch-1');
    assert.equal(m.maker, 'acme-sensors');
    assert.deepEqual(manifestClaimItems(m), expectedItems);
  });

  it('entries / keep JoinEUI, serial number and the QR string, rows named for messages', () => {
    const [first, second] = parseManifest(csv).entries;
    assert.deepEqual({ ...first }, { row: 'line 2', devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', serialNumber: 'SN-1', claimCode: devices[0]!.claimCode, qr: rows[0]!.qr });
    assert.equal(second?.serialNumber, 'SN 2'); // not in the QR code (it has a space), still in the manifest
    assert.equal(parseManifest(json).entries[2]?.row, 'devices[2]');
  });

  it('CSV / only the qr column: DevEUI and claim code come from the QR code (its OwnerToken)', () => {
    const onlyQr = ['qr', ...rows.map((r) => r.qr), ''].join('\n');
    assert.deepEqual(
      parseClaimManifest(onlyQr),
      devices.map((d) => ({ devEui: d.devEui, claimCode: d.claimCode.replace(/-/g, '') })),
    );
  });

  it('CSV / a draft QR code is read too', () => {
    const text = `devEui,qr\r\n70B3D57ED0000009,URN:DEV:LW:70B3D57ED0000000_70B3D57ED0000009_A1B2C3D4_VABCD1234\r\n`;
    assert.deepEqual(parseClaimManifest(text), [{ devEui: '70B3D57ED0000009', claimCode: 'ABCD1234' }]);
  });

  it('CSV / a spreadsheet re-saved: semicolons, BOM, re-cased headers, an extra column', () => {
    const text = `\uFEFFDEVEUI;ClaimCode;notes\n70b3d57ed0000001;${devices[0]!.claimCode};"a; b"\n`;
    assert.deepEqual(parseClaimManifest(text), [{ devEui: '70B3D57ED0000001', claimCode: devices[0]!.claimCode }]);
  });

  it('CSV / without a qr column, the label QR string is built as the maker tool builds it', () => {
    const text = `devEui,joinEui,serialNumber,claimCode\r\n70B3D57ED0000001,70B3D57ED0000000,SN-1,${devices[0]!.claimCode}\r\n`;
    const qr = parseManifest(text).entries[0]!.qr!;
    assert.equal(qr, formatTr005({ joinEui: '70B3D57ED0000000', devEui: '70B3D57ED0000001', ownerToken: devices[0]!.claimCode.replace(/-/g, ''), serialNumber: 'SN-1' }));
    assert.equal(parseDeviceQr(qr).checksummed, true);
  });

  it('a bare JSON array of devices is accepted', () => {
    const doc = JSON.parse(json) as { devices: unknown[] };
    assert.deepEqual(parseClaimManifest(JSON.stringify(doc.devices)), expectedItems);
  });
});

describe('commissioning / manifest / refused, naming the row', () => {
  it('CSV / a DevEUI that is not an EUI-64', () => {
    assert.throws(() => parseManifest(csvWith(3, csvLines[2]!.replace('70B3D57ED0000002', '70B3D57ED000002'))), invalid(/line 3: devEui is not an EUI-64/));
  });

  it('CSV / a QR code whose checksum fails', () => {
    const broken = csvLines[2]!.replace(/:C([0-9A-F]{4})$/, (_, c: string) => `:C${c === '0000' ? '0001' : '0000'}`);
    assert.throws(() => parseManifest(csvWith(3, broken)), invalid(/line 3 \(DevEUI 70B3D57ED0000002\): the qr column is not a device QR code: TR005 checksum/));
  });

  it('CSV / a QR code for another device', () => {
    const other = csvLines[2]!.replace(/,LW:D0:.*$/, `,${rows[0]!.qr}`);
    assert.throws(() => parseManifest(csvWith(3, other)), invalid(/line 3 \(DevEUI 70B3D57ED0000002\): the qr column is for DevEUI 70B3D57ED0000001/));
  });

  it('CSV / claimCode column and OwnerToken differ; the message does not show either code', () => {
    const swapped = csvLines[2]!.replace(devices[1]!.claimCode, devices[2]!.claimCode);
    assert.throws(
      () => parseManifest(csvWith(3, swapped)),
      (e: unknown) => invalid(/line 3 .*claimCode column and the OwnerToken of the qr column differ/)(e) && !devices.some((d) => (e as Error).message.includes(d.claimCode)),
    );
  });

  it('CSV / a device listed twice names both rows', () => {
    assert.throws(() => parseManifest(`${csv}${csvLines[1]}\r\n`), invalid(/line 5: DevEUI 70B3D57ED0000001 is already listed at line 2/));
  });

  it('CSV / no claim code at all: parsed for labels, refused for a claim', () => {
    const text = 'devEui,serialNumber\r\n70B3D57ED0000001,SN-1\r\n';
    assert.equal(parseManifest(text).entries.length, 1);
    assert.throws(() => parseClaimManifest(text, 'buyer.csv'), invalid(/^buyer\.csv line 2 \(DevEUI 70B3D57ED0000001\): no claim code/));
  });

  it('CSV / more fields than the header, an unclosed quote, no devEui or qr column, an empty file', () => {
    assert.throws(() => parseManifest(csvWith(2, `${csvLines[1]},extra`)), invalid(/line 2: 8 fields, but the header has 7/));
    assert.throws(() => parseManifest('devEui,claimCode\n70B3D57ED0000001,"ABCD\n'), invalid(/line 2: a quoted field is not closed/));
    assert.throws(() => parseManifest('serial,claimCode\nA,B\n'), invalid(/line 1: the header has neither a devEui nor a qr column/));
    assert.throws(() => parseManifest(''), invalid(/is empty/));
  });

  it('JSON / deviceCount disagrees with the devices (truncated file)', () => {
    const doc = JSON.parse(json) as { devices: unknown[] };
    doc.devices.pop();
    assert.throws(() => parseManifest(JSON.stringify(doc)), invalid(/deviceCount says 3 but "devices" has 2/));
  });

  it('JSON / not JSON, no devices array, a device that is not an object, a number where text belongs', () => {
    assert.throws(() => parseManifest('{"devices": ['), invalid(/not valid JSON/));
    assert.throws(() => parseManifest('{"batchId": "x"}'), invalid(/"devices" array/));
    assert.throws(() => parseManifest('{"devices": [42]}'), invalid(/devices\[0\]: expected an object/));
    assert.throws(() => parseManifest('{"devices": [{"devEui": 1234}]}'), invalid(/devices\[0\]: devEui must be a string/));
  });
});
