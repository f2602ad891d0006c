import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sessionKeyIds } from '../../src/join/service.js';

test('SessionKeyIDs are 128-bit upper-case hex, and none repeats across pool refills or generators', () => {
  const a = sessionKeyIds();
  const b = sessionKeyIds();
  const seen = new Set<string>();
  // 256 IDs per 4 KiB pool: 1,000 from each generator crosses several refills.
  for (let i = 0; i < 1000; i++) {
    for (const id of [a(), b()]) {
      assert.match(id, /^[0-9A-F]{32}$/);
      assert.ok(!seen.has(id), `SessionKeyID ${id} repeated after ${seen.size} others`);
      seen.add(id);
    }
  }
  // Random, not a counter: every hex digit shows up in every position over 2,000 IDs (16 digits, 125 draws each on average).
  for (let pos = 0; pos < 32; pos++) assert.equal(new Set([...seen].map((id) => id[pos])).size, 16, `position ${pos}`);
});
