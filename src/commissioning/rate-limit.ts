/*
 * Failed claims per caller: at most `limit` in any `windowMs`, then RATE_LIMITED until the oldest failure ages out.
 * In memory, per process: with several instances each counts its own, which multiplies the budget by the number of
 * instances but keeps guessing an 80-bit claim code hopeless either way.
 */
export class FailureLimiter {
  readonly #failures = new Map<string, number[]>();

  constructor(
    readonly limit = 10,
    readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds until `key` may try again, or 0 when it may now. */
  retryAfterS(key: string): number {
    const recent = this.#recent(key);
    if (recent.length < this.limit) return 0;
    return Math.max(1, Math.ceil((recent[0]! + this.windowMs - this.now()) / 1000));
  }

  fail(key: string): void {
    const recent = this.#recent(key);
    recent.push(this.now());
    this.#failures.set(key, recent);
    if (this.#failures.size > 100_000) this.#sweep();
  }

  #recent(key: string): number[] {
    const since = this.now() - this.windowMs;
    return (this.#failures.get(key) ?? []).filter((t) => t > since);
  }

  #sweep(): void {
    const since = this.now() - this.windowMs;
    for (const [key, times] of this.#failures) if (!times.some((t) => t > since)) this.#failures.delete(key);
  }
}
