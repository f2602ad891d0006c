import type { SimulatedDevice } from '../sim/device.js';
import { type TokenFloorResult, measureTokenFloor } from './floor-token.js';
import { createToken, softhsmModule } from './softhsm.js';

/**
 * The SoftHSM2 crypto-only floor (bench/floor-token.ts) on a fresh token of its own. Call `useSoftHsmIn(dir)` first.
 * `workingCopies: false` measures the previous design (operations on the token objects) for a before/after.
 * pkcs11js is loaded only here, so runs without SoftHSM2 do not need it.
 */
export async function measureSoftHsmFloor(fleet: readonly SimulatedDevice[], durationMs: number, label: string, opts: { workingCopies?: boolean } = {}): Promise<TokenFloorResult> {
  const token = createToken(label);
  const { acquireModule, releaseModule } = await import('../src/custody/pkcs11/module.js');
  const { TokenSession } = await import('../src/custody/pkcs11/token-session.js');
  const module = acquireModule(softhsmModule());
  try {
    const session = opts.workingCopies === false ? TokenSession.open(module, token, undefined, { workingCopies: false }) : TokenSession.open(module, token);
    try {
      return measureTokenFloor(session, fleet, durationMs);
    } finally {
      session.close();
    }
  } finally {
    releaseModule(module);
  }
}
