import { readFile } from 'node:fs/promises';
import type { Joinkeep } from '../app/joinkeep.js';

export const DATA_DIR_ENV = 'JOINKEEP_DATA_DIR';

/** A usage problem the user fixes by changing the command line (exit 2). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The command was understood but what it names does not exist (exit 1). */
export class NotFoundError extends Error {
  override readonly name = 'NotFoundError';
}

export function dataDirOf(options: { dataDir?: string }): string {
  const dir = options.dataDir ?? process.env[DATA_DIR_ENV];
  if (!dir) throw new UsageError(`give --data-dir DIR or set ${DATA_DIR_ENV}`);
  return dir;
}

/** Opens the data directory for one administrative command; logs go to stderr, warnings and above. */
export async function withJoinkeep<T>(options: { dataDir?: string }, use: (jk: Joinkeep) => Promise<T>): Promise<T> {
  // Loaded on use, so `--help` and usage errors start fast.
  const [{ openJoinkeep }, { createLogger }, { default: pino }] = await Promise.all([import('../app/joinkeep.js'), import('../observability/logger.js'), import('pino')]);
  const jk = await openJoinkeep(dataDirOf(options), { logger: createLogger({ level: 'warn', destination: pino.destination(2) }) });
  try {
    return await use(jk);
  } finally {
    await jk.close();
  }
}

export async function readSecretFile(path: string, option: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    throw new UsageError(`${option} ${path} cannot be read`);
  }
}

export function print(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}
