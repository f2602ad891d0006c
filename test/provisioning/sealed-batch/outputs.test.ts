import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Eui64, parseTr005 } from '../../../src/protocol/index.js';
import { ProvisioningError } from '../../../src/provisioning/errors.js';
import { manifestCsv, manifestJson, manifestRows, programmerFile, writeNewFiles } from '../../../src/provisioning/sealed-batch/index.js';

const eui = (s: string) => s as Eui64;

describe('maker tool outputs', () => {
  const rows = manifestRows(
    [
      { devEui: eui('70B3D57ED0000001'), joinEui: eui('70B3D57ED0000000'), macVersion: '1.0.3', serialNumber: 'SN-1', profile: 'th, v2', claimCode: 'ABCD-EFGH-JKMN-PQRS' },
      { devEui: eui('70B3D57ED0000002'), joinEui: eui('70B3D57ED0000000'), macVersion: '1.1', serialNumber: 'SN 2', claimCode: '0123-4567-89AB-CDEF' },
    ],
    'A1B2C3D4',
  );

  it('manifest / the TR005 string parses back, with the normalised claim code as OwnerToken and a valid checksum', () => {
    const qr = parseTr005(rows[0]!.qr);
    assert.deepEqual({ ...qr }, { joinEui: '70B3D57ED0000000', devEui: '70B3D57ED0000001', profileId: 'A1B2C3D4', ownerToken: 'ABCDEFGHJKMNPQRS', serialNumber: 'SN-1', checksummed: true });
  });

  it('manifest / a serial number that TR005 cannot carry stays out of the QR code, not out of the manifest', () => {
    assert.equal(parseTr005(rows[1]!.qr).serialNumber, undefined);
    assert.match(manifestCsv(rows), /,SN 2,/);
  });

  it('manifest / CSV: header, quoted fields, CRLF', () => {
    const lines = manifestCsv(rows).split('\r\n');
    assert.equal(lines[0], 'devEui,joinEui,macVersion,serialNumber,profile,claimCode,qr');
    assert.equal(lines[1], `70B3D57ED0000001,70B3D57ED0000000,1.0.3,SN-1,"th, v2",ABCD-EFGH-JKMN-PQRS,${rows[0]!.qr}`);
    assert.equal(lines[3], '');
  });

  it('manifest / JSON: batch header and devices, absent fields left out', () => {
    const m = JSON.parse(manifestJson({ batchId: 'b', kind: 'device-keys', maker: 'acme', createdAt: 't' }, rows)) as { deviceCount: number; devices: Record<string, string>[] };
    assert.equal(m.deviceCount, 2);
    assert.deepEqual(Object.keys(m.devices[1]!), ['devEui', 'joinEui', 'macVersion', 'serialNumber', 'claimCode', 'qr']);
  });

  it('programmer file / devEui,joinEui,appKey,nwkKey in upper-case hex; nwkKey empty for 1.0.x', () => {
    const out = programmerFile([
      { devEui: eui('70B3D57ED0000001'), joinEui: eui('70B3D57ED0000000'), appKey: Buffer.from('2b7e151628aed2a6abf7158809cf4f3c', 'hex') },
      { devEui: eui('70B3D57ED0000002'), joinEui: eui('70B3D57ED0000000'), appKey: Buffer.alloc(16, 0xab), nwkKey: Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex') },
    ]);
    assert.equal(
      out.toString('ascii'),
      'devEui,joinEui,appKey,nwkKey\r\n' +
        '70B3D57ED0000001,70B3D57ED0000000,2B7E151628AED2A6ABF7158809CF4F3C,\r\n' +
        `70B3D57ED0000002,70B3D57ED0000000,${'AB'.repeat(16)},000102030405060708090A0B0C0D0E0F\r\n`,
    );
  });

  describe('files', () => {
    let dir: string;
    let umask: number;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'joinkeep-outputs-'));
      umask = process.umask(0); // the modes must not depend on the caller's umask
    });
    after(async () => {
      process.umask(umask);
      await rm(dir, { recursive: true, force: true });
    });

    it('created with mode 0600 (or the mode asked for public material)', async () => {
      writeNewFiles([
        { path: join(dir, 'a'), content: 'secret' },
        { path: join(dir, 'b'), content: Buffer.from('bytes') },
        { path: join(dir, 'pub'), content: '{}', mode: 0o644 },
      ]);
      assert.equal((await stat(join(dir, 'a'))).mode & 0o777, 0o600);
      assert.equal((await stat(join(dir, 'b'))).mode & 0o777, 0o600);
      assert.equal((await stat(join(dir, 'pub'))).mode & 0o777, 0o644);
      assert.equal(await readFile(join(dir, 'b'), 'utf8'), 'bytes');
    });

    it('never overwrites: OUTPUT_EXISTS, the existing file untouched, and none of the other files created', async () => {
      await writeFile(join(dir, 'existing'), 'keep me');
      assert.throws(
        () => writeNewFiles([{ path: join(dir, 'new1'), content: 'x' }, { path: join(dir, 'existing'), content: 'y' }, { path: join(dir, 'new2'), content: 'z' }]),
        (e: unknown) => e instanceof ProvisioningError && e.code === 'OUTPUT_EXISTS' && e.message.includes('existing'),
      );
      assert.equal(await readFile(join(dir, 'existing'), 'utf8'), 'keep me');
      assert.equal(existsSync(join(dir, 'new1')), false);
      assert.equal(existsSync(join(dir, 'new2')), false);
    });

    it('refuses one path for two outputs', () => {
      assert.throws(() => writeNewFiles([{ path: join(dir, 'same'), content: 'x' }, { path: join(dir, '.', 'same'), content: 'y' }]), (e: unknown) => e instanceof ProvisioningError && e.code === 'INVALID_INPUT');
      assert.equal(existsSync(join(dir, 'same')), false);
    });
  });
});
