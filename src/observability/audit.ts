import type { AuditEvent } from '../storage/storage.js';

/** Where audit events go; the storage layer implements it (append-only table). */
export interface AuditSink {
  appendAudit(event: AuditEvent): Promise<void>;
}
