import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { StorageError } from '../storage/errors.js';
import type { AuditEvent, ListOptions, OwnershipTransferRecord } from '../storage/storage.js';
import { type Caller, requireScope } from './caller.js';
import { type CommissioningStorage, ownedDevices } from './device-access.js';
import { CommissioningError } from './errors.js';

/*
 * Fleet transfer between organisations (docs/commissioning.md): the owner offers devices, directly to an organisation
 * or to whoever presents a one-time token; on acceptance the devices belong to the recipient, unbound — so the previous
 * owner's network can no longer activate them and its application server gets no AppSKey (their sessions are gone) —
 * until the recipient binds them. Keys and JoinNonces are untouched.
 */

export interface OfferInput {
  readonly devEuis: readonly string[];
  /** The recipient organisation; absent = a token offer. */
  readonly to?: string | undefined;
  /** Seconds the offer stays open (default 7 days, at most 90 days). */
  readonly expiresInS?: number | undefined;
}

export interface TransferView {
  readonly id: string;
  readonly from: string;
  readonly to: string | null;
  readonly devEuis: readonly string[];
  readonly state: OwnershipTransferRecord['state'] | 'expired';
  readonly createdAt: string;
  readonly expiresAt: string | null;
  readonly decidedAt: string | null;
  readonly acceptedBy: string | null;
}

interface Deps {
  readonly storage: CommissioningStorage;
  readonly now?: () => Date;
}

const TOKEN_PREFIX = 'jkt_';
const sha256 = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');
const now = (deps: Deps): Date => (deps.now ?? (() => new Date()))();

function organisationOf(caller: Caller): string {
  if (caller.organisation === null) throw new CommissioningError('FORBIDDEN', 'transfers are between organisations: use an organisation\'s API key');
  return caller.organisation;
}

export function transferView(t: OwnershipTransferRecord, at: Date): TransferView {
  const expired = t.state === 'offered' && t.expiresAt !== null && t.expiresAt.getTime() <= at.getTime();
  return {
    id: t.id, from: t.fromOrg, to: t.toOrg, devEuis: [...t.devEuis], state: expired ? 'expired' : t.state,
    createdAt: t.createdAt.toISOString(), expiresAt: t.expiresAt?.toISOString() ?? null, decidedAt: t.decidedAt?.toISOString() ?? null, acceptedBy: t.acceptedBy,
  };
}

export async function offerTransfer(deps: Deps, caller: Caller, input: OfferInput): Promise<{ transfer: TransferView; token?: string }> {
  const from = organisationOf(caller);
  const found = await ownedDevices(deps.storage, caller, input.devEuis, 'devices:transfer');
  const expiresInS = input.expiresInS ?? 7 * 86_400;
  if (!Number.isInteger(expiresInS) || expiresInS < 60 || expiresInS > 90 * 86_400) throw new CommissioningError('INVALID_INPUT', 'expiresInS must be a whole number of seconds between 60 and 7,776,000 (90 days)');
  if (input.to !== undefined) {
    if (input.to === from) throw new CommissioningError('INVALID_INPUT', 'an organisation cannot transfer devices to itself');
    const recipient = await deps.storage.getOrganisation(input.to);
    if (recipient === undefined || !recipient.roles.includes('device-owner')) throw new CommissioningError('INVALID_INPUT', `no organisation ${input.to} that can own devices`);
  }
  const token = input.to === undefined ? `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}` : undefined;
  const at = now(deps);
  const record: OwnershipTransferRecord = {
    id: randomUUID(), fromOrg: from, toOrg: input.to ?? null, tokenSha256: token === undefined ? null : sha256(token),
    devEuis: found.map((f) => f.device.devEui), state: 'offered', createdAt: at, expiresAt: new Date(at.getTime() + expiresInS * 1000), decidedAt: null, acceptedBy: null,
  };
  await deps.storage.insertOwnershipTransfer(record, [
    { at, actor: caller.actor, action: 'transfer.offer', subject: `transfer/${record.id}`, outcome: 'success', organisation: from, details: { to: record.toOrg, byToken: token !== undefined, devices: record.devEuis.length } },
  ]);
  return { transfer: transferView(record, at), ...(token === undefined ? {} : { token }) };
}

/** Accepts a direct offer by id, or a token offer by its token. Anything not acceptable by this caller is NOT_FOUND. */
export async function acceptTransfer(deps: Deps, caller: Caller, by: { id: string } | { token: string }): Promise<TransferView> {
  requireScope(caller, 'devices:transfer');
  const to = organisationOf(caller);
  const org = await deps.storage.getOrganisation(to);
  if (org === undefined || !org.roles.includes('device-owner')) throw new CommissioningError('FORBIDDEN', `organisation ${to} does not have the device-owner role`);
  let transfer: OwnershipTransferRecord | undefined;
  if ('token' in by) {
    if (!by.token.startsWith(TOKEN_PREFIX)) throw new CommissioningError('NOT_FOUND', 'no transfer for this token');
    transfer = await deps.storage.findOwnershipTransferByTokenSha256(sha256(by.token));
    const same = transfer?.tokenSha256 != null && timingSafeEqual(Buffer.from(transfer.tokenSha256), Buffer.from(sha256(by.token)));
    if (transfer === undefined || !same || transfer.toOrg !== null) throw new CommissioningError('NOT_FOUND', 'no transfer for this token');
  } else {
    transfer = await deps.storage.getOwnershipTransfer(by.id);
    if (transfer === undefined || transfer.toOrg !== to) throw new CommissioningError('NOT_FOUND', `no transfer ${by.id} offered to ${to}`);
  }
  if (transfer.fromOrg === to) throw new CommissioningError('CONFLICT', 'an organisation cannot accept its own offer');
  const at = now(deps);
  const view = transferView(transfer, at);
  if (view.state !== 'offered') throw new CommissioningError('CONFLICT', `transfer ${transfer.id} is ${view.state}`);
  const audit: AuditEvent[] = [
    { at, actor: caller.actor, action: 'transfer.accept', subject: `transfer/${transfer.id}`, outcome: 'success', organisation: to, details: { from: transfer.fromOrg, devices: transfer.devEuis.length } },
    { at, actor: caller.actor, action: 'transfer.accepted', subject: `transfer/${transfer.id}`, outcome: 'success', organisation: transfer.fromOrg, details: { to, devices: transfer.devEuis.length } },
    ...transfer.devEuis.flatMap((devEui): AuditEvent[] => [
      { at, actor: caller.actor, action: 'device.transfer-in', subject: `device/${devEui}`, outcome: 'success', organisation: to, details: { transfer: transfer!.id, from: transfer!.fromOrg } },
      { at, actor: caller.actor, action: 'device.transfer-out', subject: `device/${devEui}`, outcome: 'success', organisation: transfer!.fromOrg, details: { transfer: transfer!.id, to } },
    ]),
  ];
  try {
    await deps.storage.acceptOwnershipTransfer(transfer.id, to, at, audit);
  } catch (error) {
    if (error instanceof StorageError && error.code === 'NOT_OWNED') throw new CommissioningError('CONFLICT', `transfer ${transfer.id} names devices ${transfer.fromOrg} no longer owns; nothing was transferred`);
    if (error instanceof StorageError && error.code === 'TRANSFER_NOT_OFFERED') throw new CommissioningError('CONFLICT', `transfer ${transfer.id} is no longer offered`);
    throw error;
  }
  return transferView((await deps.storage.getOwnershipTransfer(transfer.id))!, at);
}

export async function cancelTransfer(deps: Deps, caller: Caller, id: string): Promise<void> {
  requireScope(caller, 'devices:transfer');
  const from = organisationOf(caller);
  const transfer = await deps.storage.getOwnershipTransfer(id);
  if (transfer === undefined || transfer.fromOrg !== from) throw new CommissioningError('NOT_FOUND', `no transfer ${id} offered by ${from}`);
  const at = now(deps);
  const ok = await deps.storage.cancelOwnershipTransfer(id, at, [
    { at, actor: caller.actor, action: 'transfer.cancel', subject: `transfer/${id}`, outcome: 'success', organisation: from, details: {} },
  ]);
  if (!ok) throw new CommissioningError('CONFLICT', `transfer ${id} is no longer offered`);
}

export async function getTransfer(deps: Deps, caller: Caller, id: string): Promise<TransferView> {
  requireScope(caller, 'devices:read');
  const org = caller.organisation;
  const t = await deps.storage.getOwnershipTransfer(id);
  if (t === undefined || (org !== null && t.fromOrg !== org && t.toOrg !== org) || (org === null && !caller.scopes.has('admin'))) throw new CommissioningError('NOT_FOUND', `no transfer ${id}`);
  return transferView(t, now(deps));
}

export async function listTransfers(deps: Deps, caller: Caller, options: ListOptions): Promise<{ items: TransferView[]; next?: string }> {
  requireScope(caller, 'devices:read');
  const org = organisationOf(caller);
  const at = now(deps);
  const page = await deps.storage.listOwnershipTransfers(org, options);
  return { items: page.items.map((t) => transferView(t, at)), ...(page.next === undefined ? {} : { next: page.next }) };
}
