import type { ExportedKey } from '../custody/custody.js';
import type { NetworkSessionKeys } from './steps.js';

/** A successful JoinReq/RejoinReq, ready for the backend to put in a JoinAns/RejoinAns. */
export interface Activation {
  readonly phyPayload: Buffer;
  readonly lifetime: number;
  readonly sessionKeyId: string;
  readonly joinNonce: number;
  readonly network: NetworkSessionKeys;
  readonly appSKey?: ExportedKey | undefined;
}

