import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { projectRoot } from '../sim/joinkeep-cli.js';

/** What a benchmark result is worth only together with: the machine and the commit measured. */
export interface MachineInfo {
  readonly nproc: number;
  readonly cpu: string;
  readonly node: string;
  readonly commit: string;
}

export function machineInfo(): MachineInfo {
  let cpu = 'unknown CPU';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpu;
  } catch { /* not Linux */ }
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: process.env['JOINKEEP_GIT_DIR'] ?? projectRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: process.env['JOINKEEP_GIT_DIR'] ?? projectRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (dirty !== '') commit += '+changes';
  } catch { /* not a checkout */ }
  return { nproc: availableParallelism(), cpu, node: process.version, commit };
}

export function machineLine(m: MachineInfo): string {
  return `machine  ${m.nproc} CPUs, ${m.cpu}; Node ${m.node}; commit ${m.commit}`;
}

/** The machine line with the load average right now, for benchmarks that print one line of context. */
export function machineLineNow(): string {
  return `${machineLine(machineInfo())}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`;
}
