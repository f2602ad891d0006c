import { type KeyCustody, kekHandle } from '../custody/custody.js';
import { CustodyError } from '../custody/errors.js';
import { ProtocolError, parseKeyEnvelope } from '../protocol/index.js';
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

/**
 * Adds a KEK that arrives wrapped (a TS002 KeyEnvelope under a KEK already in custody): it is unwrapped only inside
 * custody — in an HSM straight into the token — so this KEK is never in clear on the operator's machine.
 */
export async function addWrappedKek(deps: { custody: KeyCustody; audit: AuditSink; actor: string }, label: string, envelopeText: string): Promise<void> {
  assertKekLabel(label);
  let envelope: { kekLabel: string | null; aesKey: Buffer };
  try {
    envelope = parseKeyEnvelope(JSON.parse(envelopeText), '--envelope');
  } catch (error) {
    if (error instanceof SyntaxError || error instanceof ProtocolError) {
      throw new ProvisioningError('INVALID_INPUT', '--envelope must be a TS002 KeyEnvelope JSON object like {"KEKLabel":"…","AESKey":"…"}');
    }
    throw error;
  }
  if (envelope.kekLabel === null) throw new ProvisioningError('CLEAR_KEY_REFUSED', '--envelope has an empty KEKLabel: give the KEK in a --key-file instead, or wrap it under a KEK already added');
  if (!(await deps.custody.hasKek(envelope.kekLabel))) throw new ProvisioningError('KEK_NOT_FOUND', `no KEK labelled "${envelope.kekLabel}" to unwrap --envelope with`);
  if (await deps.custody.hasKek(label)) throw new ProvisioningError('KEK_EXISTS', `a KEK labelled "${label}" already exists; KEKs are never replaced in place — add the new one under a new label`);
  try {
    await deps.custody.importWrapped(kekHandle(label), 'kek', envelope.aesKey, envelope.kekLabel);
  } catch (error) {
    if (error instanceof CustodyError && (error.code === 'UNWRAP_FAILED' || error.code === 'INVALID_KEY')) throw new ProvisioningError('UNWRAP_FAILED', `--envelope: ${error.message}`);
    throw error;
  }
  await deps.audit.appendAudit({ at: new Date(), actor: deps.actor, action: 'kek.add', subject: `kek/${label}`, outcome: 'success', details: { wrappedUnder: envelope.kekLabel } });
}
