/** Latency summaries. Samples in nanoseconds (bigint hrtime differences converted to number). */
export interface LatencySummary {
  readonly count: number;
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export function summarise(samplesNs: Float64Array | number[]): LatencySummary {
  const s = Float64Array.from(samplesNs).sort();
  const at = (q: number): number => (s.length === 0 ? Number.NaN : (s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? Number.NaN) / 1e6);
  return { count: s.length, p50Ms: at(0.5), p95Ms: at(0.95), p99Ms: at(0.99), maxMs: s.length === 0 ? Number.NaN : (s[s.length - 1] ?? 0) / 1e6 };
}

/** Grows without reallocating per sample: latency recording must not distort what it measures. */
export class SampleBuffer {
  #data = new Float64Array(1 << 16);
  #n = 0;

  push(v: number): void {
    if (this.#n === this.#data.length) {
      const next = new Float64Array(this.#data.length * 2);
      next.set(this.#data);
      this.#data = next;
    }
    this.#data[this.#n++] = v;
  }

  get length(): number {
    return this.#n;
  }

  values(): Float64Array {
    return this.#data.subarray(0, this.#n);
  }
}
