import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TOKENS, type World, randomEui, randomKey, startWorld } from '../helpers/world.js';
import { joinReq, joinRequestFrame, resultCode } from '../helpers/ts002.js';

/** The value of one series in a Prometheus text exposition (NaN when absent). */
const seriesValue = (text: string, series: string): number => Number(new RegExp(`^${series.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);

/** GET /metrics: 200, Prometheus text. */
async function scrape(world: World): Promise<string> {
  const res = await fetch(new URL('/metrics', world.url));
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  return res.text();
}

/**
 * One join, then the group commit histograms: at least one more durable write, the join's reservation among what they
 * delivered, and time spent. `onlyTheJoin`: nothing else rides in group commits (PostgreSQL writes audit events
 * directly; SQLite appends them to the next group), so exactly one write of one reservation.
 */
async function assertJoinCountedAsGroupCommit(world: World, joinEui: string, onlyTheJoin: boolean): Promise<void> {
  const devEui = randomEui();
  const appKey = randomKey();
  await world.provision({ devEui, joinEui, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey });
  const before = await scrape(world);
  const count = (text: string) => seriesValue(text, 'joinkeep_storage_group_commit_seconds_count');
  const sum = (text: string) => seriesValue(text, 'joinkeep_storage_group_commit_seconds_sum');
  const sizeSum = (text: string) => seriesValue(text, 'joinkeep_storage_group_commit_size_sum');
  const req = joinReq({ phy: joinRequestFrame(appKey, devEui, joinEui, 9), devEui, joinEui });
  assert.equal(resultCode(await world.post(req, TOKENS.ns)), 'Success');
  const after = await scrape(world);
  assert.ok(Number.isFinite(count(before)), 'the histogram is exposed before the join');
  const writes = count(after) - count(before);
  const delivered = sizeSum(after) - sizeSum(before);
  if (onlyTheJoin) {
    assert.equal(writes, 1, 'one group commit wrote');
    assert.equal(delivered, 1, 'the join\'s reservation');
  } else {
    assert.ok(writes >= 1, `group commits that wrote: ${writes}`);
    assert.ok(delivered >= writes, `each delivered at least one write: ${delivered} in ${writes}`);
  }
  assert.ok(sum(after) > sum(before), 'taking some time');
  assert.equal(seriesValue(after, 'joinkeep_storage_group_commit_seconds_bucket{le="+Inf"}'), count(after));
  assert.equal(seriesValue(after, 'joinkeep_storage_group_commit_size_bucket{le="+Inf"}'), count(after), 'one size per write');
}

describe('backend / Prometheus metrics', () => {
  let world: World;
  before(async () => {
    world = await startWorld('sqlite');
  });
  after(async () => {
    await world?.stop();
  });

  const metrics = (): Promise<string> => scrape(world);

  test('joins counted by message type, result code and MACVersion; latency histogram; request-chosen MessageTypes folded into "other"', async () => {
    const devEui = randomEui();
    const appKey = randomKey();
    const joinEui = '70B3D57ED0000321';
    await world.provision({ devEui, joinEui, macVersion: '1.0.2', homeNetId: '000013', asId: 'as-1', appKey });
    const req = joinReq({ phy: joinRequestFrame(appKey, devEui, joinEui, 77), devEui, joinEui, macVersion: '1.0.2' });
    assert.equal(resultCode(await world.post(req, TOKENS.ns)), 'Success');
    assert.equal(resultCode(await world.post(req, TOKENS.ns)), 'JoinReqFailed');
    for (let i = 0; i < 3; i++) await world.post({ ...req, MessageType: `Attack${i}Req` }, TOKENS.ns);

    const text = await metrics();
    assert.match(text, /joinkeep_backend_requests_total\{message_type="JoinReq",result="Success",mac_version="1.0.2"\} 1/);
    assert.match(text, /joinkeep_backend_requests_total\{message_type="JoinReq",result="JoinReqFailed",mac_version="1.0.2"\} 1/);
    assert.match(text, /joinkeep_backend_requests_total\{message_type="other",result="MalformedRequest",mac_version=""\} 3/);
    assert.doesNotMatch(text, /Attack/);
    assert.match(text, /joinkeep_backend_request_duration_seconds_bucket\{le="0.005",message_type="JoinReq"\}/);
    assert.match(text, /joinkeep_process_cpu_seconds_total/);
    const health = await fetch(new URL('/healthz', world.url));
    assert.deepEqual(await health.json(), { status: 'ok' });
  });

  test('group commit: each durable write of the join path timed, with its size', async () => {
    await assertJoinCountedAsGroupCommit(world, '70B3D57ED0000323', false);
  });

  test('SQLite checkpoints: the checkpointer thread\'s work after joins (checkpoints, time, failures, WAL left)', async () => {
    const joinEui = '70B3D57ED0000322';
    for (let i = 0; i < 4; i++) {
      const devEui = randomEui();
      const appKey = randomKey();
      await world.provision({ devEui, joinEui, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey });
      assert.equal(resultCode(await world.post(joinReq({ phy: joinRequestFrame(appKey, devEui, joinEui, 5), devEui, joinEui }), TOKENS.ns)), 'Success');
    }
    // The checkpointer runs every 25 ms once the writer has committed.
    let text = '';
    for (const deadline = Date.now() + 5_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 25))) {
      text = await metrics();
      if (seriesValue(text, 'joinkeep_sqlite_checkpoints_total{mode="passive"}') >= 1) break;
    }
    assert.ok(seriesValue(text, 'joinkeep_sqlite_checkpoints_total{mode="passive"}') >= 1, 'a passive checkpoint is counted');
    assert.equal(seriesValue(text, 'joinkeep_sqlite_checkpoints_total{mode="restart"}'), 0);
    assert.ok(seriesValue(text, 'joinkeep_sqlite_checkpoint_seconds_total') > 0);
    assert.equal(seriesValue(text, 'joinkeep_sqlite_checkpoint_failures_total'), 0);
    assert.ok(seriesValue(text, 'joinkeep_sqlite_wal_frames') >= 0);
  });
});

describe('backend / Prometheus metrics on PostgreSQL', () => {
  let world: World;
  before(async () => {
    world = await startWorld('postgres');
  });
  after(async () => {
    await world?.stop();
  });

  test('group commit: each durable write of the join path timed, with its size', async () => {
    await assertJoinCountedAsGroupCommit(world, '70B3D57ED0000324', true);
  });

  test('no SQLite checkpointer metrics', async () => {
    assert.doesNotMatch(await scrape(world), /joinkeep_sqlite_/);
  });
});
