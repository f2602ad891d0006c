import type { AuditEvent } from '../storage/storage.js';

/** Where audit events go; the storage layer implements it (append-only table). */
export interface AuditSink {
  appendAudit(event: AuditEvent): Promise<void>;
}

export function auditEvent(actor: string, action: string, subject: string, outcome: string, details: Record<string, unknown> = {}, at = new Date()): AuditEvent {
  return { at, actor, action, subject, outcome, details };
}
