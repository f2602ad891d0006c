import Fastify, { type FastifyInstance } from 'fastify';
import { authenticateApiKey, callerOfApiKey } from '../commissioning/api-keys.js';
import { FailureLimiter } from '../commissioning/rate-limit.js';
import type { KeyCustody } from '../custody/custody.js';
import type { AuditSink } from '../observability/audit.js';
import type { Logger } from '../observability/logger.js';
import type { CommissioningStore, Storage } from '../storage/storage.js';
import { addAuthentication } from './auth.js';
import type { ApiContext, ApiRoutes } from './context.js';
import { addOpenApi } from './openapi.js';
import { problem, sendError, sendProblem } from './problems.js';
import { apiRoutes } from './routes/index.js';

/*
 * The REST API, /api/v1 (docs/api/rest.md): one Fastify instance, one plugin per concern — authentication (auth.ts),
 * the OpenAPI document (openapi.ts), errors as problem+json (problems.ts) — and the route groups of routes/*.ts.
 * Handlers are thin: they parse (TypeBox), take the caller the auth hook resolved, call a service, shape the answer.
 */

export interface ApiServerOptions {
  readonly storage: Storage & CommissioningStore;
  readonly custody: KeyCustody;
  readonly logger: Logger;
  /** Largest batch accepted, bytes (a 100,000-device batch is about 30 MB). */
  readonly batchBodyLimit: number;
  /** Where audit events go; the storage by default. */
  readonly audit?: AuditSink;
  /** The route groups served; `apiRoutes` (every group of src/api/routes) by default. */
  readonly routes?: readonly ApiRoutes[];
  readonly now?: () => Date;
  /** Failed-claim budget per caller; a new one (10 per minute) by default. */
  readonly claimLimiter?: FailureLimiter;
  /** Version shown in the OpenAPI document. */
  readonly version?: string;
}

export function createApiServer(o: ApiServerOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: o.logger as never,
    // HEAD would be a second, undocumented operation per GET; the document lists exactly what is served.
    exposeHeadRoutes: false,
    ajv: { customOptions: { removeAdditional: false } },
  }) as unknown as FastifyInstance;
  const ctx: ApiContext = { storage: o.storage, custody: o.custody, audit: o.audit ?? o.storage, logger: o.logger, batchBodyLimit: o.batchBodyLimit, now: o.now ?? (() => new Date()), claimLimiter: o.claimLimiter ?? new FailureLimiter() };

  app.setErrorHandler((error, _req, reply) => {
    const reason = error instanceof Error ? error : new Error(String(error));
    const sent = sendError(reply, reason);
    if (reply.statusCode >= 500) o.logger.error({ err: reason }, 'API request failed');
    return sent;
  });
  app.setNotFoundHandler((req, reply) => sendProblem(reply, problem('NOT_FOUND', 404, `no route ${req.method} ${req.url.split('?', 1)[0]}`)));

  addAuthentication(app, {
    authenticate: async (token) => callerOfApiKey(await authenticateApiKey({ store: ctx.storage, now: ctx.now }, token)),
  });
  // Before the routes, so the document sees every one of them.
  addOpenApi(app, { version: o.version ?? '0.1.0' });
  for (const routes of o.routes ?? apiRoutes) app.register(async (scope) => routes(scope, ctx));
  return app;
}
