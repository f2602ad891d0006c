import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** SoftHSM2 tokens for a benchmark run: a configuration of the run's own (inherited by `joinkeep serve`). */

const MODULES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/local/lib/softhsm/libsofthsm2.so'];

export function softhsmModule(): string {
  const path = MODULES.find((p) => existsSync(p));
  if (!path) throw new Error('SoftHSM2 is not installed (Debian: apt-get install softhsm2)');
  return path;
}

export function useSoftHsmIn(root: string): void {
  const tokens = join(root, 'softhsm-tokens');
  mkdirSync(tokens, { recursive: true, mode: 0o700 });
  const conf = join(root, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  process.env['SOFTHSM2_CONF'] = conf;
}

export function createToken(label: string): { label: string; pin: string } {
  const pin = randomBytes(8).toString('hex');
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', randomBytes(8).toString('hex')], { stdio: 'pipe' });
  return { label, pin };
}
