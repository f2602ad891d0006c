import type { LatencySummary } from './stats.js';

export interface Row {
  readonly name: string;
  readonly joinsPerSecond: number;
  readonly latency: LatencySummary;
  readonly errors: number;
}

const f = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '-');

export function renderTable(rows: readonly Row[]): string {
  const head = ['', 'joins/s', 'p50 ms', 'p95 ms', 'p99 ms', 'errors'];
  const body = rows.map((r) => [r.name, f(r.joinsPerSecond, 0), f(r.latency.p50Ms, 3), f(r.latency.p95Ms, 3), f(r.latency.p99Ms, 3), String(r.errors)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}
