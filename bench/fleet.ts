import { randomBytes, randomInt } from 'node:crypto';
import { type MacVersion, eui64FromBeHex, netIdFromBeHex } from '../src/protocol/index.js';
import { SimulatedDevice } from '../sim/device.js';

/**
 * The benchmark's devices: each holds its own random root keys, and a DevNonce source that never repeats
 * (random for 1.0.3 — the Join Server refuses reuse — and the LoRaWAN counter for 1.1).
 */

export const BENCH_JOIN_EUI = eui64FromBeHex('70B3D57ED000BE0C');
export const BENCH_NET_ID = netIdFromBeHex('00BE0C');

export type MacMix = '1.0.3' | '1.1' | 'mix';

/** The DevNonce source of each benchmark device, by DevEUI. */
export const nonceSources = new Map<string, NonceSource>();

export function buildFleet(count: number, mix: MacMix): SimulatedDevice[] {
  const fleet: SimulatedDevice[] = [];
  for (let i = 0; i < count; i++) {
    const macVersion: MacVersion = mix === 'mix' ? (i % 2 === 0 ? '1.0.3' : '1.1') : mix;
    const devEui = eui64FromBeHex(`BE0C${i.toString(16).padStart(12, '0')}`);
    const roots = { appKey: randomBytes(16), ...(macVersion === '1.1' ? { nwkKey: randomBytes(16) } : {}) };
    const nonces = freshRandomNonces();
    nonceSources.set(devEui, nonces);
    fleet.push(new SimulatedDevice({ devEui, joinEui: BENCH_JOIN_EUI, macVersion, roots }, undefined, { randomDevNonce: nonces }));
  }
  return fleet;
}

/** A random DevNonce source that never repeats; `used` is kept so a reused fleet (--reuse) stays fresh too. */
export type NonceSource = (() => number) & { readonly used: Set<number> };

export function freshRandomNonces(used: Iterable<number> = []): NonceSource {
  const set = new Set(used);
  const next = (): number => {
    if (set.size >= 0x10000) throw new RangeError('all 65536 DevNonces used');
    let n: number;
    do n = randomInt(0, 0x10000); while (set.has(n));
    set.add(n);
    return n;
  };
  return Object.assign(next, { used: set });
}
