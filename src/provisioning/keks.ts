import type { KeyCustody } from '../custody/custody.js';
import type { AuditSink } from '../observability/audit.js';
import { ProvisioningError } from './errors.js';

/** KEK labels travel in KeyEnvelopes (TS002 §21.2); keep them printable and unambiguous. */
const KEK_LABEL = /^[\x21-\x7e]{1,128}$/;

export function assertKekLabel(label: string): void {
  if (!KEK_LABEL.test(label)) throw new ProvisioningError('INVALID_INPUT', `KEK label ${JSON.stringify(label)} must be 1–128 printable characters without spaces`);
}

/** Parses a KEK file: 32 hex digits (AES-128), or 48/64 for AES-192/256, surrounding whitespace ignored. */
export function parseKekText(text: string, source: string): Buffer {
  const hex = text.trim().replace(/^0x/i, '');
  if (!/^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64})$/.test(hex)) {
    throw new ProvisioningError('INVALID_INPUT', `${source} must hold a KEK as 32 hex digits (AES-128; 48 or 64 for AES-192/256)`);
  }
  return Buffer.from(hex, 'hex');
}

export async function addKek(deps: { custody: KeyCustody; audit: AuditSink; actor: string }, label: string, key: Buffer): Promise<void> {
  assertKekLabel(label);
  if (await deps.custody.hasKek(label)) {
    throw new ProvisioningError('KEK_EXISTS', `a KEK labelled "${label}" already exists; KEKs are never replaced in place — add the new one under a new label`);
  }
  try {
    await deps.custody.importKek(label, key);
  } finally {
    key.fill(0);
  }
  await deps.audit.appendAudit({ at: new Date(), actor: deps.actor, action: 'kek.add', subject: `kek/${label}`, outcome: 'success', details: { bits: key.length * 8 } });
}
