import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type DeviceQrFormat, DEVICE_QR_MAX_LENGTH, ProtocolError, type ProtocolErrorCode, crc16Modbus, formatTr005, isTr005Value, parseDeviceQr, parseTr005 } from '../../src/protocol/index.js';
import { type VectorSource, cite, loadVectors } from '../helpers/vectors.js';

interface Tr005Vector {
  name: string;
  source: VectorSource[];
  text: string;
  fields: { joinEui: string; devEui: string; profileId: string; ownerToken?: string; serialNumber?: string; proprietary?: string };
  crc?: string;
}
interface DraftVector extends Tr005Vector {
  format: DeviceQrFormat;
}
interface RejectedVector {
  name: string;
  source: VectorSource[];
  text: string;
  field: string;
  code: ProtocolErrorCode;
}
const file = loadVectors<{ vectors: Tr005Vector[]; drafts: DraftVector[]; rejected: RejectedVector[] }>('tr005');

const isInvalid = (field: string) => (e: unknown) => e instanceof ProtocolError && e.field === field;

describe('TR005 QR codes', () => {
  it('CRC-16/MODBUS / check value of "123456789" is 4B37 (CRC catalogue)', () => {
    assert.equal(crc16Modbus(Buffer.from('123456789', 'ascii')), 0x4b37);
  });

  for (const v of file.vectors) {
    it(`parse / ${v.name} [${cite(v.source)}]`, () => {
      const parsed = parseTr005(v.text);
      assert.deepEqual({ ...parsed }, { ...v.fields, checksummed: v.crc !== undefined });
    });
    if (v.crc !== undefined) {
      it(`format / writes the checksum last and reproduces the code / ${v.name} [${cite(v.source)}]`, () => {
        assert.equal(formatTr005(v.fields), v.text);
      });
    }
  }

  it('format / a code without extensions still gets a checksum that parses', () => {
    const text = formatTr005({ joinEui: '70b3d57ed0000000', devEui: '70B3D57ED0000001' });
    assert.match(text, /^LW:D0:70B3D57ED0000000:70B3D57ED0000001:00000000:C[0-9A-F]{4}$/);
    assert.equal(parseTr005(text).checksummed, true);
  });

  it('format / skips empty extensions', () => {
    assert.equal(formatTr005({ joinEui: '1111111111111111', devEui: '2222222222222222', profileId: 'ABCDABCD', ownerToken: '', serialNumber: 'S1' }), formatTr005({ joinEui: '1111111111111111', devEui: '2222222222222222', profileId: 'ABCDABCD', serialNumber: 'S1' }));
  });

  it('format / refuses a value with ":" or a space (it would split the code)', () => {
    assert.throws(() => formatTr005({ joinEui: '1111111111111111', devEui: '2222222222222222', serialNumber: 'A:B' }), isInvalid('SerNum'));
    assert.throws(() => formatTr005({ joinEui: '1111111111111111', devEui: '2222222222222222', ownerToken: 'A B' }), isInvalid('OwnerToken'));
  });

  it('format / refuses a ProfileID that is not 4 bytes', () => {
    assert.throws(() => formatTr005({ joinEui: '1111111111111111', devEui: '2222222222222222', profileId: 'ABCD' }), isInvalid('ProfileID'));
  });

  it('parse / a changed character fails the checksum', () => {
    const good = file.vectors[0]!.text;
    assert.throws(() => parseTr005(good.replace('SYYWW', 'SYYWX')), isInvalid('CheckSum'));
  });

  it('parse / the checksum may stand anywhere; it covers the content without the :C field', () => {
    const text = 'LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:CAF2C:OAABBCCDDEEFF:SYYWWNNNNNN:PFOOBAR';
    assert.equal(parseTr005(text).checksummed, true);
  });

  it('parse / ignores empty and unknown extensions', () => {
    const parsed = parseTr005('LW:D0:1111111111111111:2222222222222222:ABCDABCD::Xnew:O1');
    assert.equal(parsed.ownerToken, '1');
  });

  it('parse / refuses other schemes and missing fields', () => {
    assert.throws(() => parseTr005('URN:DEV:LW:1111111111111111_2222222222222222_ABCDABCD'), isInvalid('TR005'));
    assert.throws(() => parseTr005('LW:D0:1111111111111111:2222222222222222'), isInvalid('TR005'));
    assert.throws(() => parseTr005(42), isInvalid('TR005'));
  });
});

const refused = (field: string, code: ProtocolErrorCode) => (e: unknown) => e instanceof ProtocolError && e.field === field && e.code === code;

describe('Device QR codes / parseDeviceQr', () => {
  for (const v of file.vectors) {
    it(`TR005 / ${v.name} / format tr005 [${cite(v.source)}]`, () => {
      assert.deepEqual({ ...parseDeviceQr(v.text) }, { format: 'tr005', ...v.fields, checksummed: v.crc !== undefined });
    });
  }
  for (const v of file.drafts) {
    it(`${v.format} / ${v.name} / no checksum [${cite(v.source)}]`, () => {
      assert.deepEqual({ ...parseDeviceQr(v.text) }, { format: v.format, ...v.fields, checksummed: false });
    });
  }
  for (const v of file.rejected) {
    it(`rejected / ${v.name} / ${v.code} on ${v.field} [${cite(v.source)}]`, () => {
      assert.throws(() => parseDeviceQr(v.text), refused(v.field, v.code));
    });
  }

  it('TR005 / the spec example has CRC AF2C over the content before ":C" [spec-notes §8.1]', () => {
    const text = 'LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:SYYWWNNNNNN:PFOOBAR:CAF2C';
    assert.equal(crc16Modbus(Buffer.from(text.slice(0, text.lastIndexOf(':C')), 'ascii')), 0xaf2c);
    const parsed = parseDeviceQr(text);
    assert.equal(parsed.checksummed, true);
    assert.equal(parsed.ownerToken, 'AABBCCDDEEFF');
  });

  it('TR005 / lower-case EUIs and a lower-case checksum are accepted; EUIs come out upper case', () => {
    const body = 'LW:D0:70b3d57ed0000000:70b3d57ed0000001:00000000:OABCD';
    const parsed = parseDeviceQr(`${body}:C${crc16Modbus(Buffer.from(body, 'ascii')).toString(16).padStart(4, '0')}`);
    assert.deepEqual([parsed.joinEui, parsed.devEui, parsed.checksummed], ['70B3D57ED0000000', '70B3D57ED0000001', true]);
  });

  it('scanner noise / a trailing line break and surrounding spaces are ignored', () => {
    assert.equal(parseDeviceQr(`  ${file.vectors[0]!.text}\r\n`).checksummed, true);
  });

  it('rejected / not a string, or longer than any label could hold', () => {
    assert.throws(() => parseDeviceQr(undefined), refused('TR005', 'INVALID_FIELD'));
    assert.throws(() => parseDeviceQr(`LW:D0:1111111111111111:2222222222222222:ABCDABCD:P${'A'.repeat(DEVICE_QR_MAX_LENGTH)}`), refused('TR005', 'INVALID_LENGTH'));
  });

  it('rejected / error messages never repeat the code (it holds the claim code)', () => {
    const secret = 'SECRETTOKEN123';
    for (const text of [`LW:D0:1111111111111111:2222222222222222:ABCDABCD:O${secret}:C0000`, `URN:DEV:LW:1111111111111111_2222222222222222_ABCDABCD_V${secret}_P#`, `XX:${secret}`]) {
      assert.throws(() => parseDeviceQr(text), (e: unknown) => e instanceof ProtocolError && !e.message.includes(secret));
    }
  });
});

const hexArb = (bytes: number) => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString('hex'));
/** Values TR005 can carry: printable ASCII without ':' and space. */
const valueArb = fc.option(fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).filter((c) => c !== 0x3a).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 24 }), { nil: undefined });
const inputArb = fc.record({ joinEui: hexArb(8), devEui: hexArb(8), profileId: hexArb(4), ownerToken: valueArb, serialNumber: valueArb, proprietary: valueArb });

describe('Properties / TR005', () => {
  it('format then parse gives back every field, with a verified checksum written last', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const text = formatTr005(input);
        assert.match(text, /:C[0-9A-F]{4}$/);
        const parsed = parseDeviceQr(text);
        const expected = {
          format: 'tr005',
          joinEui: input.joinEui.toUpperCase(),
          devEui: input.devEui.toUpperCase(),
          profileId: input.profileId.toUpperCase(),
          ...(input.ownerToken === undefined ? {} : { ownerToken: input.ownerToken }),
          ...(input.serialNumber === undefined ? {} : { serialNumber: input.serialNumber }),
          ...(input.proprietary === undefined ? {} : { proprietary: input.proprietary }),
          checksummed: true,
        };
        assert.deepEqual({ ...parsed }, expected);
        for (const v of [input.ownerToken, input.serialNumber, input.proprietary]) if (v !== undefined) assert.ok(isTr005Value(v));
      }),
      { numRuns: 500 },
    );
  });

  it('any one character changed before the checksum is refused (CRC-16 catches every burst of up to 16 bits)', () => {
    const printable = fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c));
    fc.assert(
      fc.property(inputArb, fc.nat(), printable, (input, at, replacement) => {
        const text = formatTr005(input);
        const i = at % text.lastIndexOf(':C');
        fc.pre(text[i] !== replacement);
        const altered = text.slice(0, i) + replacement + text.slice(i + 1);
        assert.throws(() => parseDeviceQr(altered), ProtocolError);
      }),
      { numRuns: 1000 },
    );
  });
});
