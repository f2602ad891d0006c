import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  devAddrFromBeHex,
  eui64FromBeHex,
  netIdFromBeHex,
  type Eui64,
  type NetId,
} from '../../src/protocol/index.js';
import type { DeviceRecord, GroupCommitObserver, JoinDecision, JoinState, SessionRecord, Storage } from '../../src/storage/index.js';

/** Test data for storage tests: records with every field set, unique identifiers, exact-millisecond dates. */

export const randomEui = (): Eui64 => eui64FromBeHex(randomBytes(8).toString('hex'));

export const JOIN_EUI = eui64FromBeHex('70B3D57ED0000001');
export const OTHER_JOIN_EUI = eui64FromBeHex('70B3D57ED0000002');
export const NET_ID: NetId = netIdFromBeHex('000013');

/** A date with a non-zero millisecond part, to catch storage that rounds to seconds. */
export const at = (offsetMs = 0): Date => new Date(1_700_000_000_123 + offsetMs);

export function makeDevice(overrides: Partial<DeviceRecord> = {}): DeviceRecord {
  const devEui = overrides.devEui ?? randomEui();
  return {
    devEui,
    joinEui: JOIN_EUI,
    macVersion: '1.1',
    appKeyHandle: `root/${devEui}/AppKey/01`,
    nwkKeyHandle: `root/${devEui}/NwkKey/01`,
    homeNetId: NET_ID,
    homeNsId: eui64FromBeHex('00800000A0000001'),
    asId: 'as-1.example.com',
    roamingNetIds: [netIdFromBeHex('000013'), netIdFromBeHex('60002D')],
    nsKekLabel: null,
    asKekLabel: null,
    createdAt: at(),
    ...overrides,
  };
}

export function makeSession(devEui: Eui64, joinEui: Eui64, joinNonce: number, devNonce: number, id?: string): SessionRecord {
  return {
    sessionKeyId: id ?? joinNonce.toString(16).toUpperCase().padStart(8, '0'),
    devEui,
    joinEui,
    scheme: 'lorawan11',
    joinNonce,
    devNonce,
    netId: NET_ID,
    devAddr: devAddrFromBeHex('26011BDA'),
    createdAt: at(joinNonce),
  };
}

/** The decision a counter-based (1.0.4/1.1) join engine would take for `devNonce`. */
export function acceptDevNonce(devEui: Eui64, joinEui: Eui64, devNonce: number) {
  return (current: JoinState): JoinDecision<string> => {
    if (current.lastDevNonce !== null && devNonce <= current.lastDevNonce) return { refuse: 'DevNonceReplayed' };
    const joinNonce = current.lastJoinNonce + 1;
    return {
      commit: { ...current, lastJoinNonce: joinNonce, lastDevNonce: devNonce, usedDevNonces: [...current.usedDevNonces, devNonce] },
      session: makeSession(devEui, joinEui, joinNonce, devNonce),
      audit: {
        at: at(joinNonce),
        actor: 'ns/000013',
        action: 'join.accept',
        subject: `device/${devEui}`,
        outcome: 'success',
        details: { joinNonce, devNonce, joinEui },
      },
    };
  };
}

/** A storage that commits the join path in groups and reports each durable write (SqliteStorage, PostgresStorage). */
interface GroupCommitStorage extends Storage {
  observeGroupCommits(observer: GroupCommitObserver): void;
}

/**
 * observeGroupCommits on either storage: three reservations of one turn are one reported write of three, with a commit
 * time; the same DevNonces again are refused, their group is delivered (`groups`, the storage's onGroupCommitted) but
 * wrote nothing and is not reported.
 */
export async function assertGroupCommitsObserved(storage: GroupCommitStorage, groups: number[]): Promise<void> {
  const devices = Array.from({ length: 3 }, () => makeDevice());
  for (const d of devices) await storage.insertDevice(d);
  const told: (readonly [number, number])[] = [];
  storage.observeGroupCommits((size, seconds) => told.push([size, seconds]));
  try {
    const reserveAll = () => Promise.all(devices.map((d) => storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, 7), { sessionLimit: 5 })));
    groups.length = 0;
    const first = await reserveAll();
    assert.ok(first.every((r) => 'committed' in r));
    assert.deepEqual(groups, [3]);
    assert.equal(told.length, 1, 'one group wrote');
    assert.equal(told[0]![0], 3);
    assert.ok(told[0]![1] > 0 && told[0]![1] < 60, `a commit time in seconds, got ${told[0]![1]}`);
    // The same DevNonces again: every reservation is refused, the group writes nothing and is not a durable write.
    const replays = await reserveAll();
    assert.ok(replays.every((r) => 'refused' in r));
    assert.deepEqual(groups, [3, 3], 'the group of refusals was delivered');
    assert.equal(told.length, 1, 'and not reported as a commit');
  } finally {
    storage.observeGroupCommits(() => undefined);
  }
}
