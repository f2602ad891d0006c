import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { BackendError, backendErrorCodes } from '../../src/backend/errors.js';
import { CustodyError } from '../../src/custody/errors.js';
import { backendErrorResults, joinErrorResults, protocolErrorResults, resultFor } from '../../src/backend/result-codes.js';
import { JoinError, joinErrorCodes } from '../../src/join/errors.js';
import { ProtocolError, protocolErrorCodes, resultCodeText } from '../../src/protocol/index.js';
import { projectRoot } from '../helpers/vectors.js';

const doc = readFileSync(`${projectRoot()}/docs/api/backend-interfaces.md`, 'utf8');

describe('result codes / one mapping, every code documented', () => {
  const tables = [
    ['join', joinErrorCodes, joinErrorResults],
    ['protocol', protocolErrorCodes, protocolErrorResults],
    ['backend', backendErrorCodes, backendErrorResults],
  ] as const;
  for (const [area, codes, table] of tables) {
    for (const code of codes) {
      test(`${area} / ${code} / mapped, and documented with the result code it becomes`, () => {
        const result = (table as Record<string, string>)[code];
        assert.ok(result, `${code} has no result code`);
        const row = doc.split('\n').find((l) => l.startsWith(`| \`${code}\``));
        assert.ok(row, `docs/api/backend-interfaces.md lists no row for ${code}`);
        assert.ok(row.includes(`\`${resultCodeText(result as never, '1.0')}\``), `row for ${code} does not name ${result}: ${row}`);
      });
    }
  }

  test('every result code the server can emit appears in the result-code table of the docs', () => {
    const emitted = new Set([...Object.values(joinErrorResults), ...Object.values(protocolErrorResults), ...Object.values(backendErrorResults), 'Success', 'Other', 'FrameSizeError']);
    for (const code of emitted) assert.match(doc, new RegExp(`\\| \`${resultCodeText(code as never, '1.0')}\``), code);
  });

  test('errors map through resultFor; unknown errors become Other with a generic description', () => {
    assert.equal(resultFor(new JoinError('MIC_FAILED', 'x')).resultCode, 'MICFailed');
    assert.equal(resultFor(new BackendError('UNKNOWN_SENDER', 'x')).resultCode, 'UnknownSender');
    assert.equal(resultFor(new ProtocolError('INVALID_LENGTH', 'x', 'PHYPayload')).resultCode, 'FrameSizeError');
    assert.equal(resultFor(new ProtocolError('INVALID_LENGTH', 'x', 'CFList')).resultCode, 'MalformedRequest');
    const shed = resultFor(new CustodyError('OVERLOADED', 'the HSM is saturated'));
    assert.equal(shed.resultCode, 'Other');
    assert.equal(shed.internal, false);
    assert.match(shed.description, /retry later/);
    const other = resultFor(new Error('SQLITE_BUSY at /var/lib/joinkeep/joinkeep.db'));
    assert.equal(other.resultCode, 'Other');
    assert.equal(other.internal, true);
    assert.doesNotMatch(other.description, /SQLITE|joinkeep\.db/);
  });
});
