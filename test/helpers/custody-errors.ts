import assert from 'node:assert/strict';
import { CustodyError, type CustodyErrorCode } from '../../src/custody/errors.js';

/** Asserts that `promise` rejects with a CustodyError of `code` (and a message matching `message`, when given). */
export async function rejectsWith(promise: Promise<unknown>, code: CustodyErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CustodyError, `expected a CustodyError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    if (message) assert.match(error.message, message);
    return true;
  });
}
