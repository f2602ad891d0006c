import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ProvisioningError } from '../../../src/provisioning/errors.js';
import { type FactoryInputOptions, generateDevices, parseFactoryCsv, parseFactoryJson, readFactoryInput, wipeKeys } from '../../../src/provisioning/sealed-batch/index.js';

const KEYS: FactoryInputOptions = { keys: 'required' };
const K1 = '2B7E151628AED2A6ABF7158809CF4F3C';
const K2 = '000102030405060708090A0B0C0D0E0F';

const invalid = (message: RegExp) => (e: unknown) => {
  assert.ok(e instanceof ProvisioningError, String(e));
  assert.equal(e.code, 'INVALID_INPUT');
  assert.match(e.message, message);
  return true;
};

describe('factory input / CSV', () => {
  it('reads the columns whatever their spelling, EUIs with separators, keys in any case', () => {
    const csv = [
      'Dev_EUI;AppEUI;LoRaWAN Version;App Key;NWK_KEY;Serial;Device Profile;Station',
      `70-B3-D5-7E-D0-00-00-01;70b3d57ed0000000;1.0.3;${K1.toLowerCase()};;SN-1;acme-th;3`,
      `70:B3:D5:7E:D0:00:00:02;70B3D57ED0000000;1.1.0;0x${K1};${K2};"SN;2";;4`,
    ].join('\r\n');
    const { devices, ignoredColumns } = parseFactoryCsv(`\uFEFF${csv}\r\n\r\n`, KEYS);
    assert.deepEqual(ignoredColumns, ['Station']);
    assert.equal(devices.length, 2);
    const [a, b] = devices;
    assert.deepEqual({ ...a, appKey: a!.appKey?.toString('hex') }, { devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.0.3', appKey: K1.toLowerCase(), serialNumber: 'SN-1', profile: 'acme-th', source: 'line 2' });
    assert.equal(b!.macVersion, '1.1');
    assert.deepEqual(b!.nwkKey, Buffer.from(K2, 'hex'));
    assert.equal(b!.serialNumber, 'SN;2');
    assert.equal(b!.profile, undefined);
  });

  it('uses the default LoRaWAN version and profile for rows without them', () => {
    const { devices } = parseFactoryCsv(`devEui,joinEui,appKey\n70B3D57ED0000001,70B3D57ED0000000,${K1}\n`, { keys: 'required', defaultMacVersion: '1.0.4', defaultProfile: 'p1' });
    assert.equal(devices[0]!.macVersion, '1.0.4');
    assert.equal(devices[0]!.profile, 'p1');
  });

  const header = 'devEui,joinEui,macVersion,appKey,nwkKey';
  const row = (n: number, rest = `1.0.3,${K1},`) => `70B3D57ED000000${n},70B3D57ED0000000,${rest}`;
  const cases: [string, string, RegExp][] = [
    ['a DevEUI twice', [header, row(1), row(2), row(1)].join('\n'), /line 4: DevEUI 70B3D57ED0000001 is already on line 2/],
    ['bad hex', [header, row(1), `70B3D57ED000000G,70B3D57ED0000000,1.0.3,${K1},`].join('\n'), /line 3: devEui is not valid hex/],
    ['a short EUI', [header, `70B3D57ED00000,70B3D57ED0000000,1.0.3,${K1},`].join('\n'), /line 2: devEui must be 8 bytes/],
    ['a missing AppKey', [header, row(1, '1.0.3,,')].join('\n'), /line 2: appKey is missing for 70B3D57ED0000001/],
    ['a 1.1 device without NwkKey', [header, row(1, `1.1,${K1},`)].join('\n'), /line 2: nwkKey is missing for 70B3D57ED0000001, a LoRaWAN 1.1 device/],
    ['a 1.0.x device with a NwkKey', [header, row(1, `1.0.2,${K1},${K2}`)].join('\n'), /line 2: 70B3D57ED0000001 is a LoRaWAN 1.0.2 device and has only an AppKey/],
    ['a key of 15 bytes', [header, row(1, `1.0.3,${K1.slice(2)},`)].join('\n'), /line 2: appKey must be 16 bytes/],
    ['an all-zero key', [header, row(1, `1.0.3,${'0'.repeat(32)},`)].join('\n'), /line 2: appKey is all zeros/],
    ['an unknown LoRaWAN version', [header, row(1, `1.2,${K1},`)].join('\n'), /line 2: macVersion "1\.2" is not a LoRaWAN version/],
    ['no macVersion and no default', ['devEui,joinEui,appKey', `70B3D57ED0000001,70B3D57ED0000000,${K1}`].join('\n'), /line 2: macVersion is missing/],
    ['a missing devEui column', ['joinEui,macVersion,appKey', `70B3D57ED0000000,1.0.3,${K1}`].join('\n'), /line 2: devEui is missing/],
    ['two columns for one field', ['devEui,DevEUI,joinEui', '1,2,3'].join('\n'), /line 1: "devEui" and "DevEUI" are both devEui/],
    ['more fields than the header', [header, `${row(1)},extra`].join('\n'), /line 2: 6 fields, but the header has 5/],
    ['an unclosed quote (truncated file)', [header, row(1), '"70B3D57ED0000002,70B3'].join('\n'), /line 3: a quoted field is not closed/],
    ['a quote inside a field', [header, 'a"b,c'].join('\n'), /line 2: a quote inside an unquoted field/],
    ['a serial number of 65 characters', ['devEui,joinEui,macVersion,appKey,serialNumber', `70B3D57ED0000001,70B3D57ED0000000,1.0.3,${K1},${'S'.repeat(65)}`].join('\n'), /line 2: serialNumber must be 1 to 64/],
    ['an empty file', '', /is empty/],
    ['a header and no devices', `${header}\n`, /lists no devices/],
  ];
  for (const [name, csv, message] of cases) {
    it(`refuses ${name}, naming the line`, () => assert.throws(() => parseFactoryCsv(csv, KEYS), invalid(message)));
  }

  it('the line number counts line breaks inside quoted fields', () => {
    const csv = ['devEui,joinEui,macVersion,appKey,notes', `70B3D57ED0000001,70B3D57ED0000000,1.0.3,${K1},"two\nlines"`, `70B3D57ED0000001,70B3D57ED0000000,1.0.3,${K1},x`].join('\n');
    assert.throws(() => parseFactoryCsv(csv, KEYS), invalid(/line 4: DevEUI 70B3D57ED0000001 is already on line 2/));
  });

  it('never echoes a key in an error message', () => {
    const bad = `${K1.slice(0, 30)}ZZ`;
    assert.throws(() => parseFactoryCsv([header, row(1, `1.0.3,${bad},`)].join('\n'), KEYS), (e: unknown) => {
      assert.ok(e instanceof ProvisioningError);
      assert.doesNotMatch(e.message, new RegExp(K1.slice(0, 30), 'i'));
      return true;
    });
  });

  it('kind derived: refuses input that carries keys', () => {
    assert.throws(() => parseFactoryCsv([header, row(1)].join('\n'), { keys: 'forbidden' }), invalid(/line 2: has a key, but this batch kind derives keys/));
    const { devices } = parseFactoryCsv('devEui,joinEui,macVersion\n70B3D57ED0000001,70B3D57ED0000000,1.1\n', { keys: 'forbidden' });
    assert.equal(devices[0]!.appKey, undefined);
  });
});

describe('factory input / JSON', () => {
  it('reads an array of objects with the same loose names; numbers allowed for serial numbers', () => {
    const { devices, ignoredColumns } = parseFactoryJson(JSON.stringify([{ DevEUI: '70B3D57ED0000001', join_eui: '70B3D57ED0000000', mac_version: '1.1', AppKey: K1, NwkKey: K2, serialNumber: 1234, extra: true }]), KEYS);
    assert.deepEqual(ignoredColumns, ['extra']);
    assert.equal(devices[0]!.serialNumber, '1234');
    assert.equal(devices[0]!.source, 'item 0');
  });

  it('refusals name the item, or the line of a syntax error', () => {
    const ok = { devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.0.3', appKey: K1 };
    assert.throws(() => parseFactoryJson(JSON.stringify([ok, ok]), KEYS), invalid(/item 1: DevEUI 70B3D57ED0000001 is already on item 0/));
    assert.throws(() => parseFactoryJson(JSON.stringify([ok, { ...ok, devEui: '70B3D57ED0000002', appKey: 42 }]), KEYS), invalid(/item 1: appKey must be a string/));
    assert.throws(() => parseFactoryJson(JSON.stringify([ok, 'x']), KEYS), invalid(/item 1: expected an object/));
    assert.throws(() => parseFactoryJson('{"devEui": "x"}', KEYS), invalid(/must be a JSON array/));
    assert.throws(() => parseFactoryJson('[\n{"devEui": "x"},\n{"devEui" "y"}\n]', KEYS), invalid(/not valid JSON \(line 3\)/));
  });
});

describe('factory input / files', () => {
  it('tells JSON from CSV by content, and reports an unreadable file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'joinkeep-factory-'));
    try {
      await writeFile(join(dir, 'a.txt'), ` \n[{"devEui":"70B3D57ED0000001","joinEui":"70B3D57ED0000000","macVersion":"1.0.3","appKey":"${K1}"}]`);
      await writeFile(join(dir, 'b.json'), `devEui,joinEui,macVersion,appKey\n70B3D57ED0000001,70B3D57ED0000000,1.0.3,${K1}\n`);
      assert.equal((await readFactoryInput(join(dir, 'a.txt'), KEYS)).devices[0]!.source, 'item 0');
      assert.equal((await readFactoryInput(join(dir, 'b.json'), KEYS)).devices[0]!.source, 'line 2');
      await assert.rejects(readFactoryInput(join(dir, 'missing.csv'), KEYS), invalid(/cannot be read: ENOENT/));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('factory input / generated devices', () => {
  it('consecutive DevEUIs, one JoinEUI, fresh distinct keys; NwkKey only for 1.1', () => {
    const d11 = generateDevices({ count: 3, devEuiStart: '70B3D57ED00000FF', joinEui: '70b3d57ed0000000', macVersion: '1.1', profile: 'p' });
    assert.deepEqual(d11.map((d) => d.devEui), ['70B3D57ED00000FF', '70B3D57ED0000100', '70B3D57ED0000101']);
    assert.ok(d11.every((d) => d.joinEui === '70B3D57ED0000000' && d.macVersion === '1.1' && d.profile === 'p'));
    const keys = d11.flatMap((d) => [d.appKey!.toString('hex'), d.nwkKey!.toString('hex')]);
    assert.equal(new Set(keys).size, 6);
    const d10 = generateDevices({ count: 2, devEuiStart: '0000000000000000', joinEui: '0000000000000000', macVersion: '1.0.3' });
    assert.ok(d10.every((d) => d.appKey?.length === 16 && d.nwkKey === undefined));
    const ids = generateDevices({ count: 2, devEuiStart: '0000000000000000', joinEui: '0000000000000000', macVersion: '1.1', withKeys: false });
    assert.ok(ids.every((d) => d.appKey === undefined && d.nwkKey === undefined));
  });

  it('refuses a range past FFFFFFFFFFFFFFFF, and counts outside 1…1,000,000', () => {
    assert.throws(() => generateDevices({ count: 2, devEuiStart: 'FFFFFFFFFFFFFFFF', joinEui: '0000000000000000', macVersion: '1.0.3' }), invalid(/run past FFFFFFFFFFFFFFFF/));
    assert.equal(generateDevices({ count: 1, devEuiStart: 'FFFFFFFFFFFFFFFF', joinEui: '0000000000000000', macVersion: '1.0.3' })[0]!.devEui, 'FFFFFFFFFFFFFFFF');
    for (const count of [0, 1_000_001, 1.5]) assert.throws(() => generateDevices({ count, devEuiStart: '0', joinEui: '0', macVersion: '1.0.3' }), invalid(/device count must be 1 to 1000000/));
  });

  it('wipeKeys zeroes every key Buffer', () => {
    const devices = generateDevices({ count: 4, devEuiStart: '0000000000000001', joinEui: '0000000000000000', macVersion: '1.1' });
    wipeKeys(devices);
    assert.ok(devices.every((d) => d.appKey!.every((b) => b === 0) && d.nwkKey!.every((b) => b === 0)));
  });
});
