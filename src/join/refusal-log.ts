import type { Eui64 } from '../protocol/index.js';
import type { AuditEvent, PeerRecord } from '../storage/storage.js';
import { JoinError, type JoinErrorCode } from './errors.js';

/*
 * Refused activations of known devices go to the audit trail, so an owner can see why its device does not join
 * (`GET /api/v1/devices/{devEui}/activations`): a wrong key (MIC_FAILED), a replayed DevNonce, a network that is not
 * the home network. Only refusals reached after the device was found are recorded — never for unknown DevEUIs — and at
 * most one per device every `intervalMs` per process, with the number of refusals left out carried in the next one,
 * so a flood of forged requests cannot turn into a flood of writes.
 */

const recorded: ReadonlySet<JoinErrorCode> = new Set<JoinErrorCode>([
  'ACTIVATION_DISALLOWED',
  'FRAME_MISMATCH',
  'MIC_FAILED',
  'DEV_NONCE_REPLAYED',
  'RJCOUNT1_REPLAYED',
  'JOIN_NONCE_EXHAUSTED',
  'MAC_VERSION_UNSUPPORTED',
  'KEYS_UNDELIVERABLE',
]);

export class RefusalLog {
  readonly #last = new Map<Eui64, { at: number; suppressed: number }>();

  constructor(
    private readonly append: (event: AuditEvent) => Promise<void>,
    private readonly now: () => Date,
    readonly intervalMs = 10_000,
  ) {}

  /** Records `error` for `devEui` when it is worth recording; never throws (the refusal itself must still be answered). */
  async refused(action: 'join.refuse' | 'rejoin.refuse', caller: PeerRecord, devEui: Eui64, error: unknown): Promise<void> {
    if (!(error instanceof JoinError) || !recorded.has(error.code)) return;
    const at = this.now();
    const last = this.#last.get(devEui);
    if (last !== undefined && at.getTime() - last.at < this.intervalMs) {
      last.suppressed++;
      return;
    }
    this.#last.set(devEui, { at: at.getTime(), suppressed: 0 });
    if (this.#last.size > 100_000) this.#forgetOld(at.getTime());
    try {
      await this.append({ at, actor: caller.id, action, subject: `device/${devEui}`, outcome: error.code, details: { reason: error.message, notRecordedBefore: last?.suppressed ?? 0 } });
    } catch {
      // The audit store being unavailable must not change the answer the peer gets.
    }
  }

  #forgetOld(now: number): void {
    for (const [devEui, entry] of this.#last) if (now - entry.at >= this.intervalMs) this.#last.delete(devEui);
  }
}
