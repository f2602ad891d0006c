import type { PeerRecord } from './storage.js';

/*
 * Every Backend Interfaces request looks its sender up by credential, and every join its application server by AS-ID:
 * two reads of a table that changes only when an operator registers a peer. Answers are kept for a short time.
 * A write through this process clears them at once; another process's write (a new peer, a changed organisation) is
 * seen within `ttlMs`. Peers are never deleted, so a kept answer can at worst miss a peer registered elsewhere or carry
 * its previous organisation for that long. At most `limit` answers are kept (oldest dropped first), so credentials
 * that match nothing cannot grow the map.
 */
export class PeerLookups {
  readonly #answers = new Map<string, { readonly peer: PeerRecord | undefined; readonly until: number }>();
  readonly #ttlMs: number;
  readonly #limit: number;
  /** Bumped by clear(): a look-up that started before it does not keep its answer. */
  #generation = 0;

  constructor(ttlMs: number, limit = 1024) {
    this.#ttlMs = ttlMs;
    this.#limit = limit;
  }

  async find(key: string, lookUp: () => Promise<PeerRecord | undefined>): Promise<PeerRecord | undefined> {
    const now = performance.now();
    const kept = this.#answers.get(key);
    if (kept !== undefined && kept.until > now) return kept.peer;
    // Cleared while the look-up ran (a write in this process): its answer may predate the write, so it is not kept.
    const generation = this.#generation;
    const peer = await lookUp();
    if (generation === this.#generation) {
      this.#answers.delete(key);
      if (this.#answers.size >= this.#limit) this.#answers.delete(this.#answers.keys().next().value as string);
      this.#answers.set(key, { peer, until: now + this.#ttlMs });
    }
    return peer;
  }

  /** After a write to the peers table through this process. */
  clear(): void {
    this.#generation++;
    this.#answers.clear();
  }
}
