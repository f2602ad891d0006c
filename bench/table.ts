import type { LatencySummary } from './stats.js';

export interface Row {
  readonly name: string;
  readonly joinsPerSecond: number;
  readonly latency: LatencySummary;
  readonly errors: number;
}

export const fixed = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '-');

/** A plain-text table: the first column left-aligned, the others right-aligned. */
export function renderGrid(head: readonly string[], body: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

export function renderTable(rows: readonly Row[]): string {
  const head = ['', 'joins/s', 'p50 ms', 'p95 ms', 'p99 ms', 'errors'];
  return renderGrid(head, rows.map((r) => [r.name, fixed(r.joinsPerSecond, 0), fixed(r.latency.p50Ms, 3), fixed(r.latency.p95Ms, 3), fixed(r.latency.p99Ms, 3), String(r.errors)]));
}
