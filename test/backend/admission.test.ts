import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { Admission, type Release } from '../../src/backend/admission.js';
import { BackendError } from '../../src/backend/errors.js';
import { resultFor } from '../../src/backend/result-codes.js';
import type { Eui64 } from '../../src/protocol/index.js';
import { joinReq, joinRequestFrame, resultCode } from '../helpers/ts002.js';
import { TOKENS, type World, randomEui, randomKey, startWorld } from '../helpers/world.js';

const isOverloaded = (e: unknown): boolean => e instanceof BackendError && e.code === 'OVERLOADED';

describe('backend / admission control / the queue', () => {
  test('a free slot is given at once; the next waits; a release hands the slot on in arrival order', async () => {
    const a = new Admission({ maxInFlight: 1, maxQueue: 2, maxQueueMs: 10_000 });
    const first = a.enter();
    assert.equal(typeof first, 'function', 'a free slot is not a promise');
    const order: number[] = [];
    const second = Promise.resolve(a.enter()).then((r) => (order.push(2), r));
    const third = Promise.resolve(a.enter()).then((r) => (order.push(3), r));
    assert.equal(a.waiting, 2);
    (first as Release)();
    (await second)();
    (await third)();
    assert.deepEqual(order, [2, 3]);
    assert.equal(a.inFlight, 0);
    assert.equal(a.waiting, 0);
  });

  test('queue full / shed at once with OVERLOADED, counted as queue_full', () => {
    const shed: string[] = [];
    const a = new Admission({ maxInFlight: 1, maxQueue: 0, maxQueueMs: 10_000 }, (r) => shed.push(r));
    const held = a.enter() as Release;
    assert.throws(() => a.enter(), isOverloaded);
    assert.deepEqual(shed, ['queue_full']);
    held();
  });

  test('not started within maxQueueMs / shed with OVERLOADED when the wait ends, slot not taken', async () => {
    const shed: string[] = [];
    const a = new Admission({ maxInFlight: 1, maxQueue: 10, maxQueueMs: 30 }, (r) => shed.push(r));
    const held = a.enter() as Release;
    const t0 = performance.now();
    await assert.rejects(Promise.resolve(a.enter()), isOverloaded);
    assert.ok(performance.now() - t0 >= 25);
    assert.deepEqual(shed, ['queue_timeout']);
    assert.equal(a.waiting, 0);
    held();
    held(); // a second release changes nothing
    assert.equal(a.inFlight, 0);
    assert.equal(typeof a.enter(), 'function');
  });

  test('OVERLOADED becomes Other with a description that says to retry, not an internal failure', () => {
    const r = resultFor(new BackendError('OVERLOADED', 'the Join Server is overloaded (x); retry later'));
    assert.equal(r.resultCode, 'Other');
    assert.equal(r.internal, false);
    assert.match(r.description, /overloaded.*retry later/);
  });
});

describe('backend / admission control / a burst beyond capacity on a real server', () => {
  let world: World;
  before(async () => {
    world = await startWorld('sqlite', 'software', (c) => ({ ...c, backend: { ...c.backend, admission: { maxInFlight: 2, maxQueue: 4, maxQueueMs: 2000 } } }));
  });
  after(async () => {
    await world?.stop();
  });

  test('some shed with Other "overloaded … retry later" at once, none time out, shed ones consume no JoinNonce, the rest succeed', { timeout: 60_000 }, async () => {
    const joinEui = '70B3D57ED0000AD1';
    const burst = 48;
    const devices: { devEui: string; req: Record<string, unknown> }[] = [];
    for (let i = 0; i < burst; i++) {
      const devEui = randomEui('AD');
      const appKey = randomKey();
      await world.provision({ devEui, joinEui, macVersion: '1.0.3', homeNetId: '000013', asId: 'as-1', appKey });
      devices.push({ devEui, req: joinReq({ phy: joinRequestFrame(appKey, devEui, joinEui, 100 + i), devEui, joinEui, transactionId: 7000 + i }) });
    }
    // Another connection holds the database's write lock during the burst, so the two joins in flight cannot commit and
    // nothing leaves the admitted set however fast the server is: exactly 2 + 4 are admitted and the other 42 shed.
    // The lock is released once those 42 were answered, well within maxQueueMs and the storage's 5 s lock wait.
    const blocker = new BetterSqlite3(join(world.dataDir, 'joinkeep.db'));
    blocker.prepare('begin immediate').run();
    let answered = 0;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      blocker.prepare('rollback').run();
      blocker.close();
    };
    let answers: Record<string, any>[];
    try {
      const pending = devices.map((d) =>
        world.post(d.req, TOKENS.ns).then((a) => a, (e: unknown) => ({ failed: String(e) }) as Record<string, any>).finally(() => {
          if (++answered === burst - 6) release();
        }));
      answers = await Promise.all(pending);
    } finally {
      release();
    }

    assert.deepEqual(answers.filter((a) => 'failed' in a), [], 'every request got an HTTP 200 answer with a Result');
    const shed = answers.map((a, i) => ({ a, d: devices[i]! })).filter(({ a }) => resultCode(a) !== 'Success');
    const ok = answers.filter((a) => resultCode(a) === 'Success');
    assert.equal(shed.length, burst - 6, 'a burst of 48 against 2 in flight + 4 waiting sheds 42');
    assert.equal(ok.length, 6, 'the admitted ones succeed once the lock is released');
    for (const { a, d } of shed) {
      assert.equal(resultCode(a), 'Other');
      assert.match(a['Result']['Description'], /^the Join Server is overloaded \(.*\); retry later$/);
      assert.equal(a['MessageType'], 'JoinAns');
      assert.equal(a['TransactionID'], d.req['TransactionID']);
      assert.equal(a['PHYPayload'], undefined);
      const state = await world.storage.getJoinState(d.devEui as Eui64, joinEui as Eui64);
      assert.equal(state.lastJoinNonce, 0, `${d.devEui}: no JoinNonce consumed by a shed request`);
      assert.deepEqual(state.usedDevNonces, [], `${d.devEui}: its DevNonce is not recorded`);
    }
    // Retried later, the very same Join-request (same DevNonce) is answered: the shed left no trace.
    for (const { d } of shed.slice(0, 3)) assert.equal(resultCode(await world.post(d.req, TOKENS.ns)), 'Success');

    const metrics = await (await fetch(new URL('/metrics', world.url))).text();
    const counted = [...metrics.matchAll(/^joinkeep_backend_shed_total\{reason="(\w+)"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[2]), 0);
    assert.equal(counted, shed.length, 'joinkeep_backend_shed_total counts every shed request');
    assert.match(metrics, new RegExp(`joinkeep_backend_requests_total\\{message_type="JoinReq",result="Other",mac_version=""\\} ${shed.length}\\b`));
  });
});
