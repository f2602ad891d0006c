import type { KeyCustody } from '../custody/custody.js';
import type { AuditSink } from '../observability/audit.js';
import { eui64FromBeHex, netIdFromBeHex } from '../protocol/index.js';
import type { CommissioningStore, PeerRecord, Storage } from '../storage/storage.js';
import { createHash } from 'node:crypto';
import { CommissioningError } from './errors.js';
import { parseInput } from './parse-input.js';

export interface PeerCredentials {
  /** Bearer token the peer sends; stored only as its SHA-256. */
  readonly token?: string | undefined;
  /** PEM or DER client certificate to pin by SHA-256 fingerprint. */
  readonly clientCertSha256?: string | undefined;
}

export interface PeerKeyPolicy {
  readonly kekLabel?: string | undefined;
  /** Explicit operator permission for clear session keys when the peer has no KEK. */
  readonly allowClearKeys?: boolean | undefined;
  /**
   * Registering for an organisation: whether it may name this KEK (see kekUsableBy). A KEK it may not use is refused
   * exactly like one that is not in custody, so the answer does not tell another organisation's KEK labels.
   */
  readonly kekUsable?: ((label: string) => Promise<boolean>) | undefined;
}

/**
 * Whether `organisation` may name KEK `label` for a peer it registers: not when a peer of another organisation already
 * uses it (that KEK is agreed between the operator and that organisation). Peers attached to no organisation are the
 * operator's and do not count.
 */
export async function kekUsableBy(store: Pick<Storage, 'listPeers'> & Pick<CommissioningStore, 'peerOrganisation'>, organisation: string, label: string): Promise<boolean> {
  for (const p of await store.listPeers()) {
    if (p.kekLabel !== label) continue;
    const owner = await store.peerOrganisation(p.id);
    if (owner !== null && owner !== undefined && owner !== organisation) return false;
  }
  return true;
}

type Deps = { storage: Storage; custody: KeyCustody; audit: AuditSink; actor: string };

/** Shorter tokens are accepted (the operator agreed them with the peer) but the CLI warns. */
export const RECOMMENDED_TOKEN_LENGTH = 32;

export async function addNetworkServer(deps: Deps, input: { netId: string; nsId?: string | undefined } & PeerCredentials & PeerKeyPolicy): Promise<PeerRecord> {
  const netId = parseInput(() => netIdFromBeHex(input.netId, '--net-id'));
  const nsId = input.nsId === undefined ? null : parseInput(() => eui64FromBeHex(input.nsId, '--ns-id'));
  const peer = await newPeer(deps, { kind: 'ns', id: nsId ? `ns/${netId}/${nsId}` : `ns/${netId}`, netId, nsId, asId: null }, input);
  return register(deps, peer);
}

export async function addApplicationServer(deps: Deps, input: { asId: string } & PeerCredentials & PeerKeyPolicy): Promise<PeerRecord> {
  const asId = input.asId.trim();
  // TS002: an AS-ID is free text, but it is compared exactly and appears in SenderID.
  if (!/^[\x21-\x7e]{1,128}$/.test(asId)) throw new CommissioningError('INVALID_INPUT', '--as-id must be 1–128 printable characters without spaces');
  const peer = await newPeer(deps, { kind: 'as', id: `as/${asId}`, netId: null, nsId: null, asId }, input);
  return register(deps, peer);
}

/**
 * A claim client: The Things Stack's Device Claiming Server (or any client of the claim API v2), authenticated by its
 * TLS client certificate only, acting for one organisation. It cannot send Backend Interfaces messages.
 */
export async function addClaimClient(deps: Deps, input: { name: string; clientCertSha256: string }): Promise<PeerRecord> {
  const name = input.name.trim();
  if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) throw new CommissioningError('INVALID_INPUT', '--name must be 1–63 lower-case letters, digits, ".", "_" or "-"');
  const peer = await newPeer(deps, { kind: 'claim', id: `claim/${name}`, netId: null, nsId: null, asId: null }, { clientCertSha256: input.clientCertSha256 });
  return register(deps, peer);
}

async function newPeer(deps: Deps, identity: Pick<PeerRecord, 'kind' | 'id' | 'netId' | 'nsId' | 'asId'>, input: PeerCredentials & PeerKeyPolicy): Promise<PeerRecord> {
  const token = input.token?.trim();
  if ((token === undefined || token === '') && input.clientCertSha256 === undefined) {
    throw new CommissioningError('INVALID_INPUT', 'a peer needs a bearer token (--token-file) or a client certificate (--client-cert) to authenticate');
  }
  if (token !== undefined && /\s/.test(token)) {
    throw new CommissioningError('INVALID_INPUT', 'a bearer token cannot contain spaces; generate one with `openssl rand -hex 32`');
  }
  if (input.kekLabel !== undefined && input.allowClearKeys) {
    throw new CommissioningError('INVALID_INPUT', 'give either a KEK label or --allow-clear-keys, not both: keys go wrapped when a KEK is agreed');
  }
  if (input.kekLabel !== undefined && (!(await deps.custody.hasKek(input.kekLabel)) || (input.kekUsable !== undefined && !(await input.kekUsable(input.kekLabel))))) {
    throw new CommissioningError('KEK_NOT_FOUND', `no KEK labelled "${input.kekLabel}"; add it first with \`joinkeep kek add --label ${input.kekLabel} --key-file FILE\``);
  }
  return {
    ...identity,
    tokenSha256: token ? createHash('sha256').update(token).digest('hex') : null,
    clientCertSha256: input.clientCertSha256?.toLowerCase() ?? null,
    kekLabel: input.kekLabel ?? null,
    allowClearKeys: input.allowClearKeys ?? false,
    createdAt: new Date(),
  };
}

async function register(deps: Deps, peer: PeerRecord): Promise<PeerRecord> {
  if (peer.tokenSha256 !== null && (await deps.storage.findPeerByTokenSha256(peer.tokenSha256))) {
    throw new CommissioningError('PEER_EXISTS', 'another peer already uses this token; every peer needs its own');
  }
  if ((await deps.storage.listPeers()).some((p) => p.id === peer.id)) {
    throw new CommissioningError('PEER_EXISTS', `peer ${peer.id} is already registered`);
  }
  await deps.storage.insertPeer(peer);
  await deps.audit.appendAudit({
    at: peer.createdAt,
    actor: deps.actor,
    action: 'peer.add',
    subject: `peer/${peer.id}`,
    outcome: 'success',
    details: { kind: peer.kind, kekLabel: peer.kekLabel, allowClearKeys: peer.allowClearKeys, token: peer.tokenSha256 !== null, clientCert: peer.clientCertSha256 !== null },
  });
  return peer;
}

