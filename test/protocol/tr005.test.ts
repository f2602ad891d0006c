import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProtocolError, crc16Modbus, formatTr005, parseTr005 } from '../../src/protocol/index.js';
import { type VectorSource, cite, loadVectors } from '../helpers/vectors.js';

interface Tr005Vector {
  name: string;
  source: VectorSource[];
  text: string;
  fields: { joinEui: string; devEui: string; profileId: string; ownerToken?: string; serialNumber?: string; proprietary?: string };
  crc?: string;
}
const file = loadVectors<{ vectors: Tr005Vector[] }>('tr005');

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
