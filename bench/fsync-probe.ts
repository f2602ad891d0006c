import { closeSync, fsyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Median time of a small write + fsync in `dir` (the data directory's file system). A Join Server that
 * commits each JoinNonce durably before answering cannot beat 1/fsync per serialised writer, so this
 * number frames the end-to-end figure.
 */
export function fsyncMedianMs(dir: string, rounds = 100): number {
  const path = join(dir, '.fsync-probe');
  const fd = openSync(path, 'w');
  const times: number[] = [];
  try {
    const block = Buffer.alloc(128, 0x5a);
    for (let i = 0; i < rounds; i++) {
      const t0 = performance.now();
      writeSync(fd, block);
      fsyncSync(fd);
      times.push(performance.now() - t0);
    }
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] ?? Number.NaN;
}
