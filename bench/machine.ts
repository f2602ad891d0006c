import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { projectRoot } from '../sim/joinkeep-cli.js';

/** What a figure needs next to it: CPUs, model, Node, commit (and whether the tree had changes), load average now. */
export function machineLine(): string {
  let cpu = 'unknown CPU';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpu;
  } catch { /* not Linux */ }
  let commit = 'unknown';
  try {
    const git = (args: string[]): string => execFileSync('git', args, { cwd: process.env['JOINKEEP_GIT_DIR'] ?? projectRoot, encoding: 'utf8' }).trim();
    commit = git(['rev-parse', '--short', 'HEAD']) + (git(['status', '--porcelain', '--untracked-files=no']) === '' ? '' : ' (with uncommitted changes)');
  } catch { /* not a checkout */ }
  return `machine  ${availableParallelism()} CPUs, ${cpu}; Node ${process.version}; commit ${commit}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`;
}
