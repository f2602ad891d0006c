/*
 * The server's own account of its durable writes during a load: the joinkeep_storage_group_commit_* histograms of
 * /metrics (docs/operations.md), scraped before and after the load. A join's latency is at least one group's write, so
 * printing these beside the client's percentiles shows how much of the latency the disk (or PostgreSQL) decided.
 */

/** One scrape of the two histograms: cumulative bucket counts by upper bound (seconds), count, sum, and the sizes' sum. */
export interface GroupCommitScrape {
  readonly buckets: ReadonlyMap<number, number>;
  readonly count: number;
  readonly seconds: number;
  readonly delivered: number;
}

export interface GroupCommitFigures {
  /** Group commits that wrote something between the two scrapes. */
  readonly writes: number;
  /** Reservations and audit events per write, on average. */
  readonly meanSize: number;
  readonly meanMs: number;
  /** Upper bounds of the buckets holding the median and the 99th percentile (Infinity past the last bucket). */
  readonly p50AtMostMs: number;
  readonly p99AtMostMs: number;
}

const SERIES = /^joinkeep_storage_group_commit_(seconds_bucket\{le="([^"]+)"\}|seconds_count|seconds_sum|size_sum) (\S+)$/gm;

/** The histograms from a Prometheus text exposition, or undefined when the server does not expose them. */
export function parseGroupCommitScrape(text: string): GroupCommitScrape | undefined {
  const buckets = new Map<number, number>();
  let count: number | undefined;
  let seconds: number | undefined;
  let delivered: number | undefined;
  for (const [, series, le, value] of text.matchAll(SERIES)) {
    const v = Number(value);
    if (le !== undefined) buckets.set(le === '+Inf' ? Infinity : Number(le), v);
    else if (series === 'seconds_count') count = v;
    else if (series === 'seconds_sum') seconds = v;
    else delivered = v;
  }
  if (count === undefined || seconds === undefined || delivered === undefined || buckets.size === 0) return undefined;
  return { buckets, count, seconds, delivered };
}

/** What happened between two scrapes of the same server. */
export function groupCommitFigures(before: GroupCommitScrape, after: GroupCommitScrape): GroupCommitFigures {
  const writes = after.count - before.count;
  const quantileAtMost = (q: number): number => {
    const rank = q * writes;
    for (const [le, cumulative] of [...after.buckets].sort((a, b) => a[0] - b[0])) {
      if (cumulative - (before.buckets.get(le) ?? 0) >= rank) return le * 1000;
    }
    return Infinity;
  };
  return {
    writes,
    meanSize: writes > 0 ? (after.delivered - before.delivered) / writes : 0,
    meanMs: writes > 0 ? ((after.seconds - before.seconds) / writes) * 1000 : 0,
    p50AtMostMs: writes > 0 ? quantileAtMost(0.5) : 0,
    p99AtMostMs: writes > 0 ? quantileAtMost(0.99) : 0,
  };
}

export function formatGroupCommitFigures(f: GroupCommitFigures, loadS: number): string {
  const bound = (ms: number): string => (ms === Infinity ? 'over the last bucket' : `≤ ${ms} ms`);
  return (
    `durable  during load (${loadS} s): ${f.writes} group commits, ${f.meanSize.toFixed(1)} joins or audit events each; ` +
    `write to COMMIT mean ${f.meanMs.toFixed(2)} ms, p50 ${bound(f.p50AtMostMs)}, p99 ${bound(f.p99AtMostMs)} (server's joinkeep_storage_group_commit_*)`
  );
}

/** Scrapes the server's /metrics; undefined when it cannot be read (the figures are then left out, never made up). */
export async function scrapeGroupCommits(serverUrl: string): Promise<GroupCommitScrape | undefined> {
  try {
    const res = await fetch(new URL('/metrics', serverUrl));
    return res.ok ? parseGroupCommitScrape(await res.text()) : undefined;
  } catch {
    return undefined;
  }
}
