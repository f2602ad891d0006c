import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TABLE_CONFIGURATIONS, parseTableOptions } from '../../bench/options.js';

/*
 * `npm run bench:table` options: the defaults measure every configuration at saturation and at 25 % and 50 % of it,
 * short enough for a 2-CPU machine; the benchmark talks to loopback only.
 */

describe('bench / table options', () => {
  it('defaults / every configuration, 25 % and 50 % of saturation, 2 s + 8 s, 500 devices, JSON off', () => {
    const o = parseTableOptions([], 2);
    assert.deepEqual(o.configurations, TABLE_CONFIGURATIONS);
    assert.deepEqual(o.loads, [25, 50]);
    assert.equal(o.warmupS, 2);
    assert.equal(o.durationS, 8);
    assert.equal(o.devices, 500);
    assert.equal(o.postgresUrl, undefined);
    assert.equal(o.json, false);
  });

  it('--json alone / JSON on stdout; --json FILE / also into the file', () => {
    assert.equal(parseTableOptions(['--json'], 2).json, true);
    assert.equal(parseTableOptions(['--json', '/tmp/x.json'], 2).json, '/tmp/x.json');
  });

  it('--configurations / a subset is kept in the given order; an unknown name is refused', () => {
    assert.deepEqual(parseTableOptions(['--configurations', 'softhsm-sqlite, software-sqlite'], 2).configurations, ['softhsm-sqlite', 'software-sqlite']);
    assert.throws(() => parseTableOptions(['--configurations', 'software-mysql'], 2), /unknown configuration software-mysql/);
  });

  it('--loads / percentages in (0, 100]; others refused', () => {
    assert.deepEqual(parseTableOptions(['--loads', '10,50,90'], 2).loads, [10, 50, 90]);
    assert.throws(() => parseTableOptions(['--loads', '0'], 2), /--loads/);
    assert.throws(() => parseTableOptions(['--loads', '150'], 2), /--loads/);
  });

  it('--postgres-url / loopback accepted, any other host refused', () => {
    assert.equal(parseTableOptions(['--postgres-url', 'postgres://postgres@127.0.0.1:55432/postgres'], 2).postgresUrl, 'postgres://postgres@127.0.0.1:55432/postgres');
    assert.throws(() => parseTableOptions(['--postgres-url', 'postgres://postgres@db.example.com/postgres'], 2), /refusing non-loopback host db\.example\.com/);
  });
});
