import { randomBytes } from 'node:crypto';
import {
  devAddrFromBeHex,
  eui64FromBeHex,
  netIdFromBeHex,
  type Eui64,
  type NetId,
} from '../../src/protocol/index.js';
import type { DeviceRecord, JoinDecision, JoinState, SessionRecord } from '../../src/storage/index.js';

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
