import type { KeyCustody, KeyDestination } from '../custody/custody.js';
import type { PeerRecord } from '../storage/storage.js';
import { JoinError } from './errors.js';

/**
 * Where a peer's session keys go: wrapped under its KEK, or, only when the operator explicitly allowed it
 * for that peer and no KEK is agreed, in clear. Decided before any nonce is reserved, so a join that could
 * not deliver its keys never burns a JoinNonce.
 */
export async function destinationFor(custody: KeyCustody, peer: PeerRecord, role: string, boundKekLabel: string | null = null): Promise<KeyDestination> {
  // The device's binding may name which of the peer's KEKs to use (commissioning checked it was the peer's).
  const kekLabel = boundKekLabel ?? peer.kekLabel;
  if (kekLabel !== null) {
    if (await custody.hasKek(kekLabel)) return { kekLabel };
    throw new JoinError('KEYS_UNDELIVERABLE', `KEK "${kekLabel}" of ${role} ${peer.id} is not in custody`);
  }
  if (peer.allowClearKeys) return { clear: { peer: peer.id, allowedBy: 'operator-peer-setting' } };
  throw new JoinError('KEYS_UNDELIVERABLE', `${role} ${peer.id} has no KEK and clear session keys are not allowed for it`);
}
