/*
 * The open-loop schedule of the load generator (bench/load-process.ts): request k is due at start + k × interval,
 * k = 0, 1, …, whatever the answers do, and its latency counts from that time, so queueing is not hidden.
 */

/**
 * How many requests are due `elapsedMs` after the start: every k with k × interval ≤ elapsed, and none scheduled at
 * or after the end of the run. Counting only the requests whose *next* slot had passed would start each one an interval
 * late (10 ms at 100/s) and add that interval to every latency measured from the scheduled start.
 */
export function requestsDue(elapsedMs: number, intervalMs: number, runMs: number): number {
  if (elapsedMs < 0) return 0;
  const scheduled = Math.ceil(runMs / intervalMs);
  return Math.min(Math.floor(elapsedMs / intervalMs) + 1, scheduled);
}
