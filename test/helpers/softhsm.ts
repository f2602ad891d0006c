import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/*
 * SoftHSM2 for tests: one temporary configuration per test process (SoftHSM reads SOFTHSM2_CONF once, at
 * C_Initialize), and as many fresh tokens in it as a test asks for. `npm test` installs softhsm2 when missing;
 * without it these helpers fail, they never skip.
 */

const MODULE_CANDIDATES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/local/lib/softhsm/libsofthsm2.so'];

export function softhsmModulePath(): string {
  const path = process.env['JOINKEEP_TEST_PKCS11_MODULE'] ?? MODULE_CANDIDATES.find((p) => existsSync(p));
  if (path === undefined || !existsSync(path)) {
    throw new Error('SoftHSM2 is not installed (libsofthsm2.so not found): run `npm test`, which installs it (Debian package softhsm2)');
  }
  return path;
}

let tokenDir: string | undefined;

/** Points this process at its own SoftHSM2 configuration; idempotent. Call before the module is loaded. */
export function useTemporarySoftHsmConfig(): string {
  if (tokenDir !== undefined) return tokenDir;
  const root = mkdtempSync(join(tmpdir(), 'joinkeep-softhsm-'));
  tokenDir = join(root, 'tokens');
  mkdirSync(tokenDir, { mode: 0o700 });
  const conf = join(root, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env['SOFTHSM2_CONF'] = conf;
  return tokenDir;
}

export interface TestToken {
  readonly label: string;
  readonly pin: string;
  readonly soPin: string;
}

/** Initialises a fresh token (its own label and PIN) in this process's SoftHSM2 configuration. */
export function createTestToken(prefix = 'jk'): TestToken {
  useTemporarySoftHsmConfig();
  const token = { label: `${prefix}-${randomBytes(4).toString('hex')}`, pin: randomBytes(8).toString('hex'), soPin: randomBytes(8).toString('hex') };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', token.label, '--pin', token.pin, '--so-pin', token.soPin], {
    env: process.env,
    stdio: 'pipe',
  });
  return token;
}

/** The directory SoftHSM2's file store keeps a token in: the one whose token.object holds its (padded) label. */
export function tokenDirectoryOf(label: string): string {
  const root = useTemporarySoftHsmConfig();
  const padded = Buffer.from(label.padEnd(32, ' '));
  for (const name of readdirSync(root)) {
    const file = join(root, name, 'token.object');
    if (existsSync(file) && readFileSync(file).includes(padded)) return join(root, name);
  }
  throw new Error(`no SoftHSM2 token directory holds the label ${label}`);
}

/**
 * Takes a token out from under every process using it, as when an HSM fails: its storage disappears, and SoftHSM2
 * then refuses every use of its objects (CKR_OBJECT_HANDLE_INVALID; no object found) and C_GetTokenInfo
 * (CKR_GENERAL_ERROR). Returns the function that brings it back intact.
 */
export function disableToken(label: string): () => void {
  const dir = tokenDirectoryOf(label);
  // Out of the token directory: SoftHSM2 takes every directory in it for a token.
  const away = join(dirname(useTemporarySoftHsmConfig()), `disabled-${label}`);
  renameSync(dir, away);
  return () => renameSync(away, dir);
}

/**
 * A private copy of the SoftHSM2 library, loaded as a separate instance with its own state, as each HSM of a pool
 * has its own client library. SoftHSM2 remembers a token that failed as invalid until its library is initialised
 * again; a member on its own copy can be, without touching the other members.
 */
export function privateModuleCopy(name: string): string {
  const copy = join(dirname(useTemporarySoftHsmConfig()), `libsofthsm2-${name}.so`);
  if (!existsSync(copy)) copyFileSync(softhsmModulePath(), copy);
  return copy;
}

/*
 * Holds POSIX (fcntl) write locks on every file of a token from another process, as a stalled network HSM: SoftHSM2
 * takes a lock on a key's files before using the key, so each key operation on the token waits until release()
 * (C_GetTokenInfo does not). perl is used because Node has no fcntl locks; perl-base is essential on Debian.
 */
const LOCKER = `use strict; use Fcntl qw(F_SETLK F_WRLCK SEEK_SET);
my ($dir) = @ARGV; my @held;
opendir(my $dh, $dir) or die "opendir $dir: $!";
for my $name (readdir $dh) {
  next if $name =~ /^\\./;
  open(my $fh, '+<', "$dir/$name") or next;
  my $lock = pack('s s x4 q q i x4', F_WRLCK, SEEK_SET, 0, 0, 0);
  fcntl($fh, F_SETLK, $lock) or die "lock $name: $!";
  push @held, $fh;
}
$| = 1; print "locked\\n"; my $ignored = <STDIN>;`;

export async function stallToken(label: string): Promise<{ release(): Promise<void> }> {
  const child = spawn('perl', ['-e', LOCKER, tokenDirectoryOf(label)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`could not lock token ${label} (perl exited ${code}): ${stderr}`)));
  });
  return {
    async release() {
      child.stdin.end();
      await exited;
    },
  };
}
