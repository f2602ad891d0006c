import Fastify, { type FastifyInstance } from 'fastify';
import type { KeyCustody } from '../custody/custody.js';
import type { Logger } from '../observability/logger.js';
import { importSealedBatch } from '../provisioning/batch-import.js';
import { currentReceivingKey } from '../provisioning/receiving-keys.js';
import type { Storage } from '../storage/storage.js';
import { problemFor, sendProblem } from './problems.js';

/*
 * The REST API, /api/v1 (docs/api/rest.md). Personalization only for now: the receiving key makers seal batches to,
 * and sealed batch import. A batch authenticates itself — only a registered maker's signature over a batch addressed
 * to our receiving key is accepted — so import needs no other credential; organisations and API keys come with
 * commissioning.
 */

export interface ApiServerOptions {
  readonly storage: Storage;
  readonly custody: KeyCustody;
  readonly logger: Logger;
  /** Largest batch accepted, bytes (a 100,000-device batch is about 30 MB). */
  readonly batchBodyLimit: number;
}

export function createApiServer(o: ApiServerOptions): FastifyInstance {
  const app = Fastify({ loggerInstance: o.logger as never, disableRequestLogging: false, bodyLimit: o.batchBodyLimit }) as unknown as FastifyInstance;
  // The batch is verified over its exact bytes: keep the body as a Buffer whatever its JSON content type.
  app.addContentTypeParser(['application/json', 'application/jose+json', 'application/octet-stream'], { parseAs: 'buffer', bodyLimit: o.batchBodyLimit }, (_req, body, done) => done(null, body));
  app.setErrorHandler((error, _req, reply) => {
    const status = (error as { statusCode?: number }).statusCode;
    if (status === 413) return sendProblem(reply, { type: 'urn:joinkeep:problem:TOO_LARGE', title: 'TOO_LARGE', status: 413, code: 'TOO_LARGE', detail: `the body is larger than ${o.batchBodyLimit} bytes` });
    if (status === 415) return sendProblem(reply, { type: 'urn:joinkeep:problem:UNSUPPORTED_MEDIA_TYPE', title: 'UNSUPPORTED_MEDIA_TYPE', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', detail: 'send the sealed batch as application/json' });
    const problem = problemFor(error);
    if (problem.status >= 500) o.logger.error({ err: error }, 'API request failed');
    return sendProblem(reply, problem);
  });

  app.get('/api/v1/receiving-key', async (_req, reply) => {
    const newest = await currentReceivingKey(o.custody);
    if (newest === undefined) return sendProblem(reply, { type: 'urn:joinkeep:problem:NOT_FOUND', title: 'NOT_FOUND', status: 404, code: 'NOT_FOUND', detail: 'this Join Server has no receiving key yet (`joinkeep receiving-key create`)' });
    return reply.type('application/jwk+json').send(newest.jwk);
  });

  app.post('/api/v1/batches', async (req, reply) => {
    if (!Buffer.isBuffer(req.body)) return sendProblem(reply, { type: 'urn:joinkeep:problem:BATCH_INVALID', title: 'BATCH_INVALID', status: 400, code: 'BATCH_INVALID', detail: 'the body must be a sealed batch (JSON)' });
    const report = await importSealedBatch({ storage: o.storage, custody: o.custody, actor: `api/${req.ip}` }, req.body);
    return reply.code(201).send(report);
  });

  return app;
}
