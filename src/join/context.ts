import type { KeyCustody } from '../custody/custody.js';
import type { Storage } from '../storage/storage.js';

export interface JoinSettings {
  /** Lifetime sent in JoinAns/RejoinAns, seconds; 0 = the Join Server sets no limit. */
  readonly sessionLifetimeSeconds: number;
  /** Sessions kept per device for AppSKeyReq. */
  readonly sessionLimit: number;
  /** Used random DevNonces remembered per device (LoRaWAN ≤1.0.3). */
  readonly devNonceHistory: number;
}

export const defaultJoinSettings: JoinSettings = { sessionLifetimeSeconds: 0, sessionLimit: 10, devNonceHistory: 64 };

/** What every join step may use. Time and randomness are injected so tests control them. */
export interface JoinContext {
  readonly storage: Storage;
  readonly custody: KeyCustody;
  readonly settings: JoinSettings;
  readonly now: () => Date;
  /** A fresh SessionKeyID, canonical upper-case hex. */
  readonly newSessionKeyId: () => string;
}
