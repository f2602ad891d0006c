import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JoinError } from '../../src/join/errors.js';
import { RefusalLog } from '../../src/join/refusal-log.js';
import type { Eui64 } from '../../src/protocol/index.js';
import type { AuditEvent, PeerRecord } from '../../src/storage/storage.js';

const ns = { id: 'ns/000013' } as PeerRecord;
const A = '70B3D57ED0000001' as Eui64;
const B = '70B3D57ED0000002' as Eui64;

function log(intervalMs = 10_000) {
  const events: AuditEvent[] = [];
  let now = 1_000_000;
  const l = new RefusalLog(async (e) => void events.push(e), () => new Date(now), intervalMs);
  return { l, events, advance: (ms: number) => void (now += ms) };
}

describe('RefusalLog', () => {
  it('records a refusal of a known device with its code, reason and sender', async () => {
    const { l, events } = log();
    await l.refused('join.refuse', ns, A, new JoinError('MIC_FAILED', 'JoinReq MIC does not verify'));
    assert.equal(events.length, 1);
    assert.deepEqual({ ...events[0], at: undefined }, { at: undefined, actor: 'ns/000013', action: 'join.refuse', subject: `device/${A}`, outcome: 'MIC_FAILED', details: { reason: 'JoinReq MIC does not verify', notRecordedBefore: 0 } });
  });

  it('does not record refusals that name no known device, nor other errors', async () => {
    const { l, events } = log();
    await l.refused('join.refuse', ns, A, new JoinError('UNKNOWN_DEVICE', 'no device'));
    await l.refused('join.refuse', ns, A, new JoinError('UNKNOWN_RECEIVER', 'not ours'));
    await l.refused('join.refuse', ns, A, new Error('storage down'));
    assert.equal(events.length, 0);
  });

  it('records at most one refusal per device per interval and counts the ones left out', async () => {
    const { l, events, advance } = log(10_000);
    for (let i = 0; i < 50; i++) await l.refused('join.refuse', ns, A, new JoinError('DEV_NONCE_REPLAYED', 'replayed'));
    await l.refused('rejoin.refuse', ns, B, new JoinError('MIC_FAILED', 'bad MIC'));
    assert.deepEqual(events.map((e) => e.subject), [`device/${A}`, `device/${B}`]);
    advance(10_000);
    await l.refused('join.refuse', ns, A, new JoinError('DEV_NONCE_REPLAYED', 'replayed'));
    assert.equal(events.length, 3);
    assert.equal(events[2]!.details['notRecordedBefore'], 49);
  });

  it('never throws when the audit store fails', async () => {
    const l = new RefusalLog(async () => { throw new Error('down'); }, () => new Date());
    await l.refused('join.refuse', ns, A, new JoinError('MIC_FAILED', 'x'));
  });
});
