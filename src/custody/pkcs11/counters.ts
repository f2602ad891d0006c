import type { Template } from 'pkcs11js';
import type { Pkcs11 } from './module.js';

/*
 * Cheap counters of what a TokenSession asks of the token: PKCS#11 calls by function, and key objects created
 * (session or token) and destroyed. They live in a Float64Array over a SharedArrayBuffer, one per session, written
 * only by the thread that owns the session and read (at any time, without locking: a figure a few calls old is fine)
 * by the main thread, for `/metrics` and the benchmark. An increment is one typed-array store per call.
 */

/** The PKCS#11 functions a TokenSession calls; anything else is not reachable through the counted facade. */
export const COUNTED_FUNCTIONS = [
  'C_SignInit',
  'C_Sign',
  'C_DecryptInit',
  'C_Decrypt',
  'C_DeriveKey',
  'C_WrapKey',
  'C_UnwrapKey',
  'C_CreateObject',
  'C_CopyObject',
  'C_DestroyObject',
  'C_GenerateKeyPair',
  'C_SetAttributeValue',
  'C_GetAttributeValue',
  'C_FindObjectsInit',
  'C_FindObjects',
  'C_FindObjectsFinal',
] as const;

export type CountedFunction = (typeof COUNTED_FUNCTIONS)[number];
export type CountedPkcs11 = Pick<Pkcs11, CountedFunction>;

const SESSION_OBJECTS = COUNTED_FUNCTIONS.length;
const TOKEN_OBJECTS = SESSION_OBJECTS + 1;
const DESTROYED = SESSION_OBJECTS + 2;
/** Float64 slots per session: one per function, then session objects created, token objects created, destroyed. */
export const COUNTER_SLOTS = SESSION_OBJECTS + 3;

/** A snapshot of the counters of one or more sessions. */
export interface Pkcs11Counters {
  readonly calls: Readonly<Record<CountedFunction, number>>;
  /** Key objects created with CKA_TOKEN=false (session keys, working copies, lifetime keys: token-session.ts). */
  readonly sessionObjectsCreated: number;
  /** Key objects created on the token (imported root keys and KEKs). */
  readonly tokenObjectsCreated: number;
  readonly objectsDestroyed: number;
}

export function newCounterArray(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(COUNTER_SLOTS * Float64Array.BYTES_PER_ELEMENT));
}

/** Sums the counter arrays of several sessions (the pool's workers and the main thread's login session). */
export function readCounters(arrays: Iterable<Float64Array>): Pkcs11Counters {
  const sum = new Float64Array(COUNTER_SLOTS);
  for (const a of arrays) for (let i = 0; i < COUNTER_SLOTS; i++) sum[i]! += a[i] ?? 0;
  return {
    calls: Object.fromEntries(COUNTED_FUNCTIONS.map((f, i) => [f, sum[i]!])) as Record<CountedFunction, number>,
    sessionObjectsCreated: sum[SESSION_OBJECTS]!,
    tokenObjectsCreated: sum[TOKEN_OBJECTS]!,
    objectsDestroyed: sum[DESTROYED]!,
  };
}

/** The total of all calls in a snapshot. */
export function totalCalls(c: Pkcs11Counters): number {
  return COUNTED_FUNCTIONS.reduce((n, f) => n + c.calls[f], 0);
}

/** `after - before`, field by field (counters only grow). */
export function diffCounters(after: Pkcs11Counters, before: Pkcs11Counters): Pkcs11Counters {
  return {
    calls: Object.fromEntries(COUNTED_FUNCTIONS.map((f) => [f, after.calls[f] - before.calls[f]])) as Record<CountedFunction, number>,
    sessionObjectsCreated: after.sessionObjectsCreated - before.sessionObjectsCreated,
    tokenObjectsCreated: after.tokenObjectsCreated - before.tokenObjectsCreated,
    objectsDestroyed: after.objectsDestroyed - before.objectsDestroyed,
  };
}

/**
 * The functions a TokenSession uses, each counting into `counts` before calling the module. A call that throws
 * still counts (the token did the work of refusing); an object counts as created only when a handle came back.
 */
export function countedPkcs11(p: Pkcs11, counts: Float64Array): CountedPkcs11 {
  const call = <F extends CountedFunction>(name: F): Pkcs11[F] => {
    const i = COUNTED_FUNCTIONS.indexOf(name);
    const f = (p[name] as (...args: unknown[]) => unknown).bind(p);
    return ((...args: unknown[]) => {
      counts[i]!++;
      return f(...args);
    }) as Pkcs11[F];
  };
  const created = <F extends 'C_DeriveKey' | 'C_UnwrapKey' | 'C_CreateObject' | 'C_CopyObject'>(name: F): Pkcs11[F] => {
    const counted = call(name) as (...args: unknown[]) => unknown;
    return ((...args: unknown[]) => {
      const handle = counted(...args);
      counts[onToken(args[args.length - 1] as Template) ? TOKEN_OBJECTS : SESSION_OBJECTS]!++;
      return handle;
    }) as Pkcs11[F];
  };
  const destroy = call('C_DestroyObject');
  const generatePair = call('C_GenerateKeyPair');
  return {
    C_SignInit: call('C_SignInit'),
    C_Sign: call('C_Sign'),
    C_DecryptInit: call('C_DecryptInit'),
    C_Decrypt: call('C_Decrypt'),
    C_DeriveKey: created('C_DeriveKey'),
    C_WrapKey: call('C_WrapKey'),
    C_UnwrapKey: created('C_UnwrapKey'),
    C_CreateObject: created('C_CreateObject'),
    C_CopyObject: created('C_CopyObject'),
    C_DestroyObject: ((session, object) => {
      destroy(session, object);
      counts[DESTROYED]!++;
    }) as Pkcs11['C_DestroyObject'],
    C_GenerateKeyPair: ((session, mechanism, publicTemplate, privateTemplate) => {
      const pair = generatePair(session, mechanism, publicTemplate, privateTemplate);
      for (const template of [publicTemplate, privateTemplate]) counts[onToken(template) ? TOKEN_OBJECTS : SESSION_OBJECTS]!++;
      return pair;
    }) as Pkcs11['C_GenerateKeyPair'],
    C_SetAttributeValue: call('C_SetAttributeValue'),
    C_GetAttributeValue: call('C_GetAttributeValue'),
    C_FindObjectsInit: call('C_FindObjectsInit'),
    C_FindObjects: call('C_FindObjects'),
    C_FindObjectsFinal: call('C_FindObjectsFinal'),
  };
}

/** CKA_TOKEN (0x1) in a creation template; PKCS#11's default is false (a session object). */
function onToken(template: Template | undefined): boolean {
  return (template ?? []).some((a) => a.type === 0x1 && a.value === true);
}
