import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TOKENS, type World, randomEui, randomKey, startWorld } from '../helpers/world.js';
import { joinReq, joinRequestFrame, resultCode } from '../helpers/ts002.js';

describe('backend / Prometheus metrics', () => {
  let world: World;
  before(async () => {
    world = await startWorld('sqlite');
  });
  after(async () => {
    await world?.stop();
  });

  async function metrics(): Promise<string> {
    const res = await fetch(new URL('/metrics', world.url));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    return res.text();
  }

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

  test('SQLite checkpoints: the checkpointer thread\'s work after joins (checkpoints, time, failures, WAL left)', async () => {
    const joinEui = '70B3D57ED0000322';
    for (let i = 0; i < 4; i++) {
      const devEui = randomEui();
      const appKey = randomKey();
      await world.provision({ devEui, joinEui, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey });
      assert.equal(resultCode(await world.post(joinReq({ phy: joinRequestFrame(appKey, devEui, joinEui, 5), devEui, joinEui }), TOKENS.ns)), 'Success');
    }
    const value = (text: string, series: string): number => Number(new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
    // The checkpointer runs every 25 ms once the writer has committed.
    let text = '';
    for (const deadline = Date.now() + 5_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 25))) {
      text = await metrics();
      if (value(text, 'joinkeep_sqlite_checkpoints_total{mode="passive"}') >= 1) break;
    }
    assert.ok(value(text, 'joinkeep_sqlite_checkpoints_total{mode="passive"}') >= 1, 'a passive checkpoint is counted');
    assert.equal(value(text, 'joinkeep_sqlite_checkpoints_total{mode="restart"}'), 0);
    assert.ok(value(text, 'joinkeep_sqlite_checkpoint_seconds_total') > 0);
    assert.equal(value(text, 'joinkeep_sqlite_checkpoint_failures_total'), 0);
    assert.ok(value(text, 'joinkeep_sqlite_wal_frames') >= 0);
  });
});
