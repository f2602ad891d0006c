import { ProtocolError } from './errors.js';

/*
 * Nonce rules as pure functions: the join engine runs them inside the storage transaction that
 * holds the device's row, so the decision and the state change commit together.
 */

/** JoinNonce is 24 bits on air (LoRaWAN 1.1 §6.2.3). */
export const MAX_JOIN_NONCE = 0xffffff;

/**
 * The JoinNonce for the next Join-accept: one per device, first value 1, never reused, never wrapped.
 * 1.1 devices accept only a JoinNonce greater than the last one they stored, starting from 0
 * (LoRaMac-node IsJoinNonce11xOk), so a value must never repeat or decrease.
 */
export function nextJoinNonce(lastJoinNonce: number): number {
  if (lastJoinNonce >= MAX_JOIN_NONCE) {
    throw new ProtocolError('JOIN_NONCE_EXHAUSTED', 'JoinNonce would exceed 2^24-1: the device needs new root keys or a new JoinEUI');
  }
  return lastJoinNonce + 1;
}

/** Per-(JoinEUI, DevEUI) DevNonce state. `lastDevNonce` null means none seen yet. */
export interface DevNonceState {
  readonly lastDevNonce: number | null;
  /** Used random DevNonces, oldest first (LoRaWAN ≤1.0.3 devices). */
  readonly usedDevNonces: readonly number[];
}

export type DevNonceVerdict =
  | { readonly ok: true; readonly next: DevNonceState }
  | { readonly ok: false; readonly reason: 'dev-nonce-reused' | 'dev-nonce-not-increasing' };

/**
 * LoRaWAN 1.0.4 §6.2.5 / 1.1: DevNonce is a counter starting at 0; accept only a value strictly greater
 * than the last one for this JoinEUI. The first Join-request (any value, 0 included) is accepted.
 */
export function checkDevNonceCounter(state: DevNonceState, devNonce: number): DevNonceVerdict {
  if (state.lastDevNonce !== null && devNonce <= state.lastDevNonce) {
    return { ok: false, reason: 'dev-nonce-not-increasing' };
  }
  return { ok: true, next: { lastDevNonce: devNonce, usedDevNonces: state.usedDevNonces } };
}

/**
 * LoRaWAN 1.0.0–1.0.3 §6.2.4: DevNonce is random; the JS keeps "a certain number" of used values
 * and ignores a Join-request that reuses one. `limit` bounds the history (oldest dropped first).
 */
export function checkDevNonceRandom(state: DevNonceState, devNonce: number, limit: number): DevNonceVerdict {
  if (state.usedDevNonces.includes(devNonce)) return { ok: false, reason: 'dev-nonce-reused' };
  const used = [...state.usedDevNonces, devNonce];
  return { ok: true, next: { lastDevNonce: devNonce, usedDevNonces: used.length > limit ? used.slice(used.length - limit) : used } };
}

/**
 * LoRaWAN 1.1 §6.2.4.2: RJcount1 increases with every type-1 Rejoin-request and never wraps for a JoinEUI;
 * the Join Server ignores one that is not greater than the last it accepted.
 */
export function checkRjCount1(lastRjCount1: number | null, rjCount1: number): boolean {
  return lastRjCount1 === null || rjCount1 > lastRjCount1;
}
