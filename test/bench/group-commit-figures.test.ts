import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { formatGroupCommitFigures, groupCommitFigures, parseGroupCommitScrape } from '../../bench/group-commit-figures.js';
import { type GroupCommitSource, registerStorageMetrics } from '../../src/observability/storage-metrics.js';

type Observer = Parameters<GroupCommitSource['observeGroupCommits']>[0];

/*
 * The benchmark's reading of the server's group commit histograms: the exposition comes from the server's own
 * registration (registerStorageMetrics on a storage that reports its group commits), as /metrics would serve it.
 */

function serverRegistry(): { registry: Registry; commit: Observer } {
  const registry = new Registry();
  let observer: Observer | undefined;
  const storage: GroupCommitSource = { observeGroupCommits: (o) => void (observer = o) };
  registerStorageMetrics(registry, storage);
  return { registry, commit: (size, seconds) => observer!(size, seconds) };
}

describe('bench / group commit figures', () => {
  it('between two scrapes: writes, mean size and time, and the buckets holding p50 and p99', async () => {
    const server = serverRegistry();
    server.commit(50, 0.2); // before the load: not counted
    const before = parseGroupCommitScrape(await server.registry.metrics());
    for (let i = 0; i < 98; i++) server.commit(2, 0.0008);
    server.commit(10, 0.03);
    server.commit(10, 0.03);
    const after = parseGroupCommitScrape(await server.registry.metrics());
    assert.ok(before && after);
    const f = groupCommitFigures(before, after);
    assert.equal(f.writes, 100);
    assert.ok(Math.abs(f.meanSize - 2.16) < 1e-9, `mean size ${f.meanSize}`);
    assert.ok(Math.abs(f.meanMs - 1.384) < 1e-9, `mean ${f.meanMs} ms`);
    assert.equal(f.p50AtMostMs, 1, 'the median write is in the 1 ms bucket');
    assert.equal(f.p99AtMostMs, 50, 'the 99th in the 50 ms bucket (98 writes below 1 ms, 2 at 30 ms)');
    assert.match(formatGroupCommitFigures(f, 12), /100 group commits, 2\.2 joins or audit events each; write to COMMIT mean 1\.38 ms, p50 ≤ 1 ms, p99 ≤ 50 ms/);
  });

  it('a write slower than the last bucket / its percentile is reported as over it, not as a number', async () => {
    const server = serverRegistry();
    const before = parseGroupCommitScrape(await server.registry.metrics());
    server.commit(1, 3);
    const after = parseGroupCommitScrape(await server.registry.metrics());
    const f = groupCommitFigures(before!, after!);
    assert.equal(f.p99AtMostMs, Infinity);
    assert.match(formatGroupCommitFigures(f, 1), /p99 over the last bucket/);
  });

  it('no writes between the scrapes / zeros, no division by zero', async () => {
    const server = serverRegistry();
    const scrape = parseGroupCommitScrape(await server.registry.metrics());
    assert.deepEqual(groupCommitFigures(scrape!, scrape!), { writes: 0, meanSize: 0, meanMs: 0, p50AtMostMs: 0, p99AtMostMs: 0 });
  });

  it('an exposition without the histograms (an older server) / undefined, so the figures are left out', () => {
    assert.equal(parseGroupCommitScrape('# HELP joinkeep_backend_requests_total x\njoinkeep_backend_requests_total 3\n'), undefined);
  });
});
