/*
 * Opaque pagination cursors: base64url of `<kind>:<key>`. The kind stops a device cursor from being replayed
 * against the audit list; the key is validated before it reaches a query.
 */

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/** The page size actually used: default 100, clamped to 1…1000. */
export function pageSize(limit: number | undefined): number {
  if (limit === undefined || !Number.isFinite(limit)) return DEFAULT_PAGE_SIZE;
  return Math.min(MAX_PAGE_SIZE, Math.max(1, Math.floor(limit)));
}

export function encodeCursor(kind: 'device' | 'audit' | 'inventory' | 'owned' | 'organisation' | 'ownership-transfer' | 'batch', key: string | number): string {
  return Buffer.from(`${kind}:${key}`, 'utf8').toString('base64url');
}

const DEVICE_KEY = /^[0-9A-F]{16}$/;
const AUDIT_KEY = /^[1-9][0-9]{0,15}$/;
const ORGANISATION_KEY = /^[a-z0-9][a-z0-9-]{1,62}$/;
/** `<created_at ms>/<id>`: transfers page newest first, ties broken by id. */
const TRANSFER_KEY = /^([0-9]{1,16})\/([A-Za-z0-9-]{1,64})$/;

export function decodeDeviceCursor(cursor: string): string {
  const key = decode(cursor, 'device');
  if (!DEVICE_KEY.test(key)) throw invalidCursor();
  return key;
}

export function decodeInventoryCursor(cursor: string): string {
  const key = decode(cursor, 'inventory');
  if (!DEVICE_KEY.test(key)) throw invalidCursor();
  return key;
}

/** listOwnedDevices: one DevEUI order over bound and unbound devices. */
export function decodeOwnedCursor(cursor: string): string {
  const key = decode(cursor, 'owned');
  if (!DEVICE_KEY.test(key)) throw invalidCursor();
  return key;
}

export function decodeOrganisationCursor(cursor: string): string {
  const key = decode(cursor, 'organisation');
  if (!ORGANISATION_KEY.test(key)) throw invalidCursor();
  return key;
}

export function decodeOwnershipTransferCursor(cursor: string): { createdAt: number; id: string } {
  const match = TRANSFER_KEY.exec(decode(cursor, 'ownership-transfer'));
  if (match === null) throw invalidCursor();
  return { createdAt: Number(match[1]), id: match[2]! };
}

/** Batches page by batch id (a lower-case UUID). */
export function decodeBatchCursor(cursor: string): string {
  const key = decode(cursor, 'batch');
  if (!/^[0-9a-f-]{36}$/.test(key)) throw invalidCursor();
  return key;
}

export function decodeAuditCursor(cursor: string): number {
  const key = decode(cursor, 'audit');
  if (!AUDIT_KEY.test(key)) throw invalidCursor();
  return Number(key);
}

function decode(cursor: string, kind: string): string {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const prefix = `${kind}:`;
  if (!text.startsWith(prefix)) throw invalidCursor();
  return text.slice(prefix.length);
}

// The contract has no code for a bad argument yet; a RangeError keeps it distinguishable from database failures.
const invalidCursor = (): RangeError => new RangeError('invalid pagination cursor');
