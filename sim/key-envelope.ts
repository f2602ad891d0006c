import { aesKeyUnwrap, aesKeyWrap } from '../src/custody/primitives.js';
import type { KeyEnvelopeJson } from '../src/protocol/index.js';

/*
 * TS002 KeyEnvelope (§21.2): AESKey is the RFC 3394 wrap of the key under the KEK named by KEKLabel,
 * or the key in clear when KEKLabel is empty or absent. KEKs are agreed out of band; the holder of one
 * (the NS, the AS, the device factory) unwraps or wraps with it here.
 */

export interface Kek {
  readonly label: string;
  readonly key: Buffer;
}

export type UnwrapFailure = 'missing' | 'malformed' | 'label-mismatch' | 'unwrap-failed' | 'wrong-length';

export type UnwrapResult =
  | { readonly ok: true; readonly key: Buffer; readonly kekLabel: string | null }
  | { readonly ok: false; readonly reason: UnwrapFailure; readonly detail: string };

/** `kek.label` '' accepts any label (an AS that knows only its key); a clear envelope is returned with kekLabel null. */
export function unwrapEnvelope(value: unknown, kek: Kek, field: string): UnwrapResult {
  if (value === undefined || value === null) return { ok: false, reason: 'missing', detail: `${field} is absent` };
  if (typeof value !== 'object' || Array.isArray(value)) return { ok: false, reason: 'malformed', detail: `${field} is not a KeyEnvelope object` };
  const env = value as Record<string, unknown>;
  const label = env['KEKLabel'];
  const aesKey = env['AESKey'];
  if (typeof aesKey !== 'string' || !/^(?:0[xX])?(?:[0-9a-fA-F]{2})+$/.test(aesKey)) {
    return { ok: false, reason: 'malformed', detail: `${field}.AESKey is not hex` };
  }
  const bytes = Buffer.from(aesKey.replace(/^0[xX]/, ''), 'hex');
  if (label === undefined || label === null || label === '') {
    if (bytes.length !== 16) return { ok: false, reason: 'wrong-length', detail: `${field} in clear must be 16 bytes, got ${bytes.length}` };
    return { ok: true, key: bytes, kekLabel: null };
  }
  if (typeof label !== 'string') return { ok: false, reason: 'malformed', detail: `${field}.KEKLabel is not a string` };
  if (kek.label !== '' && label !== kek.label) {
    return { ok: false, reason: 'label-mismatch', detail: `${field} is wrapped under KEK "${label}", this peer holds "${kek.label}"` };
  }
  if (bytes.length !== 24) return { ok: false, reason: 'wrong-length', detail: `${field} wrapped must be 24 bytes, got ${bytes.length}` };
  try {
    return { ok: true, key: aesKeyUnwrap(kek.key, bytes), kekLabel: label };
  } catch {
    return { ok: false, reason: 'unwrap-failed', detail: `${field} failed the RFC 3394 integrity check under KEK "${kek.label}"` };
  }
}

/** The factory-side step: wrap a root key under the Join Server's import KEK. */
export function wrapEnvelope(kek: Kek, key: Buffer): KeyEnvelopeJson {
  return { KEKLabel: kek.label, AESKey: aesKeyWrap(kek.key, key).toString('hex').toUpperCase() };
}
