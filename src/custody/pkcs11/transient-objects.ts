import type { ObjectHandle } from './module.js';

/*
 * A search of the token can meet, for a moment, an object that is not a token key. SoftHSM2 makes a C_CopyObject
 * copy by first giving the new session object every attribute of the original, CKA_TOKEN=true and the label
 * included, and only then applying the copy's template (CKA_TOKEN=false). A search by another thread of the same
 * process in between finds the copy as a second token key with that label (measured on SoftHSM2 2.6.1: 493 of
 * 43,103 searches made while another thread copied the key back to back), and reading the attributes of a copy
 * still being made can fail (CKR_ATTRIBUTE_VALUE_INVALID). Our own working copies (token-session.ts) are such
 * copies. So a search whose answer looks wrong in that way is made again after a pause, a few times; only an answer
 * that stays wrong says something about the token (two keys under one label, an object that cannot be read).
 */

/** Pauses before each new search; about 130 ms in all, so only a token that really is in that state waits that long. */
export const RESEARCH_PAUSES_MS: readonly number[] = [1, 5, 25, 100];

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Blocks this thread for `ms` (PKCS#11 calls are synchronous here, so the search that follows is too). */
function pause(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

/** `first` if it is settled; otherwise what `search` answers once its answer is settled, or its last answer. */
export function searchUntilSettled<T>(first: T, search: () => T, settled: (answer: T) => boolean, pauses: readonly number[] = RESEARCH_PAUSES_MS): T {
  let answer = first;
  for (const ms of pauses) {
    if (settled(answer)) return answer;
    pause(ms);
    answer = search();
  }
  return answer;
}

/** The objects a search by label found, searched again while it finds more than one. */
export function settleDuplicates(found: ObjectHandle[], search: () => ObjectHandle[], pauses: readonly number[] = RESEARCH_PAUSES_MS): ObjectHandle[] {
  return searchUntilSettled(found, search, (objects) => objects.length <= 1, pauses);
}
