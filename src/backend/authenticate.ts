import { hash } from 'node:crypto';
import { netIdFromBeHex, type RequestHeader } from '../protocol/index.js';
import type { PeerRecord, Storage } from '../storage/storage.js';
import { BackendError } from './errors.js';

/** What the transport tells us about the caller. */
export interface Credentials {
  /** Value of the Authorization header, if any. */
  readonly authorization?: string | undefined;
  /** SHA-256 of the verified TLS client certificate (DER), lower-case hex, if any. */
  readonly clientCertSha256?: string | undefined;
}

/** One-shot: no Hash object per request (a native object the garbage collector has to finalise). */
export function sha256Hex(text: string | Uint8Array): string {
  return hash('sha256', text, 'hex');
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/**
 * Finds the registered peer behind the credentials and checks it is the sender the message names:
 * an NS (by NetID, and NSID when both sides have one) for JoinReq/RejoinReq/HomeNSReq, an AS (by AS-ID)
 * for AppSKeyReq. Any mismatch is UnknownSender, with no hint about which part failed.
 */
export async function authenticatePeer(storage: Storage, credentials: Credentials, header: RequestHeader, role: 'ns' | 'as'): Promise<PeerRecord> {
  const peer = await findPeer(storage, credentials);
  if (peer === undefined || peer.kind !== role || !sendsAs(peer, header)) {
    throw new BackendError('UNKNOWN_SENDER', `sender ${JSON.stringify(header.senderId)} is not a registered ${role === 'ns' ? 'network server' : 'application server'} with these credentials`);
  }
  return peer;
}

async function findPeer(storage: Storage, credentials: Credentials): Promise<PeerRecord | undefined> {
  const token = credentials.authorization === undefined ? undefined : BEARER.exec(credentials.authorization)?.[1];
  // Tokens are long random secrets, so a plain SHA-256 is the right hash: lookup by digest, nothing to brute-force.
  if (token !== undefined) return storage.findPeerByTokenSha256(sha256Hex(token));
  if (credentials.clientCertSha256 !== undefined) return storage.findPeerByClientCertSha256(credentials.clientCertSha256);
  return undefined;
}

function sendsAs(peer: PeerRecord, header: RequestHeader): boolean {
  if (peer.kind === 'as') return peer.asId === header.senderId;
  let netId: string;
  try {
    netId = netIdFromBeHex(header.senderId, 'SenderID');
  } catch {
    return false;
  }
  if (peer.netId !== netId) return false;
  // TS002-1.1: SenderNSID names the NS inside its NetID. A peer registered with an NSID must present it when it sends one.
  return peer.nsId === null || header.senderNsId === undefined || header.senderNsId === peer.nsId;
}
