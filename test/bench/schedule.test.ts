import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { requestsDue } from '../../bench/schedule.js';

/*
 * The load generator's open loop: request k is due at k × interval after the start, and latency counts from then.
 * A schedule that starts each request one interval late adds that interval to every latency (10 ms at 100/s).
 */

describe('bench / open-loop schedule', () => {
  it('request 0 is due at the start, request k at k × interval', () => {
    assert.equal(requestsDue(0, 10, 1000), 1);
    assert.equal(requestsDue(9.99, 10, 1000), 1);
    assert.equal(requestsDue(10, 10, 1000), 2);
    assert.equal(requestsDue(25, 10, 1000), 3);
  });

  it('nothing is due before the start', () => {
    assert.equal(requestsDue(-1, 10, 1000), 0);
  });

  it('never more than the run holds: rate × duration requests, none at or after the end', () => {
    assert.equal(requestsDue(1000, 10, 1000), 100);
    assert.equal(requestsDue(5000, 10, 1000), 100);
    assert.equal(requestsDue(1000, 3, 1000), 334); // k = 0 … 333: 333 × 3 = 999 < 1000
  });

  it('a sub-millisecond interval (1,800/s): every slot up to now, including the one due exactly now', () => {
    const interval = 1000 / 1800;
    assert.equal(requestsDue(1, interval, 8000), 2);
    assert.equal(requestsDue(interval * 7, interval, 8000), 8);
  });
});
