import type { FastifyInstance } from 'fastify';
import type { FailureLimiter } from '../commissioning/rate-limit.js';
import type { KeyCustody } from '../custody/custody.js';
import type { AuditSink } from '../observability/audit.js';
import type { Logger } from '../observability/logger.js';
import type { CommissioningStore, Storage } from '../storage/storage.js';

/** What route modules are given: the opened installation, nothing else. */
export interface ApiContext {
  readonly storage: Storage & CommissioningStore;
  readonly custody: KeyCustody;
  readonly audit: AuditSink;
  readonly logger: Logger;
  /** Largest sealed batch accepted, bytes. */
  readonly batchBodyLimit: number;
  readonly now: () => Date;
  /** Failed claims per caller (shared with the claim API v2 on the backend listener). */
  readonly claimLimiter: FailureLimiter;
}

/**
 * A group of routes (src/api/routes/*.ts), registered in a plugin context of its own (content-type parsers and hooks it
 * adds stay its own). Each route declares `config.scope` and TypeBox request and response schemas.
 */
export type ApiRoutes = (app: FastifyInstance, ctx: ApiContext) => void | Promise<void>;
