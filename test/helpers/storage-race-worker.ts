/**
 * Child process for test/storage/concurrency.test.ts: opens its own storage on the shared database, waits for
 * "go", then tries to accept DevNonces 0…n-1 on one device, in the same order as its rivals, so that every DevNonce
 * is raced by every process at once. Reports what it got accepted.
 *
 * Config arrives in JOINKEEP_RACE as JSON (RaceConfig); results leave over the IPC channel (RaceMessage).
 */
import { openStorage, type JoinDecision, type JoinState } from '../../src/storage/index.js';
import type { Eui64 } from '../../src/protocol/index.js';
import { makeSession } from './storage-fixtures.js';

export interface RaceConfig {
  readonly storage: { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string };
  readonly worker: number;
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly devNonces: number;
  readonly sessionLimit: number;
}

export type RaceMessage =
  | { readonly type: 'ready' }
  | { readonly type: 'done'; readonly accepted: ReadonlyArray<{ devNonce: number; joinNonce: number }>; readonly refused: number }
  | { readonly type: 'error'; readonly message: string };

function send(message: RaceMessage): Promise<void> {
  return new Promise((resolve, reject) => process.send?.(message, (error: Error | null) => (error ? reject(error) : resolve())));
}

async function main(): Promise<void> {
  const config = JSON.parse(process.env['JOINKEEP_RACE'] ?? '') as RaceConfig;
  const storage = await openStorage(
    config.storage.kind === 'postgres' ? { ...config.storage, options: { maxConnections: 2 } } : config.storage,
  );
  try {
    await new Promise<void>((resolve) => {
      process.once('message', () => resolve());
      void send({ type: 'ready' });
    });
    const accepted: Array<{ devNonce: number; joinNonce: number }> = [];
    let refused = 0;
    for (let devNonce = 0; devNonce < config.devNonces; devNonce++) {
      // LoRaWAN ≤1.0.3 rule: a DevNonce is accepted once. The session id names the worker, so that a broken
      // lock shows up as a duplicated JoinNonce in the parent's assertions rather than as a key collision here.
      const decide = (current: JoinState): JoinDecision<'replayed'> => {
        if (current.usedDevNonces.includes(devNonce)) return { refuse: 'replayed' };
        const joinNonce = current.lastJoinNonce + 1;
        const sessionKeyId = ((config.worker << 16) | devNonce).toString(16).toUpperCase().padStart(8, '0');
        return {
          commit: { ...current, lastJoinNonce: joinNonce, lastDevNonce: devNonce, usedDevNonces: [...current.usedDevNonces, devNonce] },
          session: makeSession(config.devEui, config.joinEui, joinNonce, devNonce, sessionKeyId),
        };
      };
      const result = await storage.reserveJoin(config.devEui, config.joinEui, decide, { sessionLimit: config.sessionLimit });
      if ('committed' in result) accepted.push({ devNonce, joinNonce: result.committed.lastJoinNonce });
      else refused++;
    }
    await send({ type: 'done', accepted, refused });
  } finally {
    await storage.close();
  }
}

main().then(
  () => process.disconnect?.(),
  async (error: unknown) => {
    await send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) }).catch(() => undefined);
    process.exitCode = 1;
    process.disconnect?.();
  },
);
