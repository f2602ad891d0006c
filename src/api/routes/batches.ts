import { type Static, Type } from '@sinclair/typebox';
import { isOperator, requireScope } from '../../commissioning/caller.js';
import { requireOwnMaker } from '../../commissioning/makers.js';
import { importSealedBatch } from '../../provisioning/batch-import.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { problem, sendProblem } from '../problems.js';
import { Closed, DateTime, Page, PageQuery, problems } from '../schemas.js';

const BatchReport = Closed({
  batchId: Type.String(),
  maker: Type.String(),
  kind: Type.Union([Type.Literal('device-keys'), Type.Literal('derived'), Type.Literal('derivation-master'), Type.Literal('transfer')]),
  devices: Type.Integer({ description: 'devices added to the maker\'s inventory' }),
});

const Batch = Closed({
  batchId: Type.String(),
  maker: Type.String(),
  kind: Type.Union([Type.Literal('device-keys'), Type.Literal('derived'), Type.Literal('derivation-master'), Type.Literal('transfer')]),
  deviceCount: Type.Integer(),
  createdAt: DateTime,
  importedAt: DateTime,
});

/** Described for the document only: the batch is verified over its exact bytes by importSealedBatch, not by a schema. */
const SealedBatch = Type.Object({}, { additionalProperties: true, description: 'the sealed batch file exactly as `joinkeep batch seal` wrote it (docs/specs/sealed-batch.md)' });

export const batchRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  // The batch is verified over its exact bytes: keep the body as a Buffer whatever its JSON content type (this
  // plugin context only; the other routes get parsed JSON).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(['application/json', 'application/jose+json', 'application/octet-stream'], { parseAs: 'buffer', bodyLimit: ctx.batchBodyLimit }, (_req, body, done) => done(null, body));

  app.get<{ Querystring: PageQuery }>('/api/v1/batches', {
    config: { scope: 'batches:read' },
    schema: { summary: 'Batches imported for your organisation\'s makers (every batch for an operator key)', tags: ['personalization'], operationId: 'listBatches', querystring: PageQuery, response: { 200: Page(Batch) } },
    handler: async (req) => {
      const caller = callerOf(req);
      requireScope(caller, 'batches:read');
      const makers = isOperator(caller) ? undefined : [...(await ctx.storage.makerOrganisations())].filter(([, org]) => org === caller.organisation).map(([maker]) => maker);
      const page = await ctx.storage.listBatches({ limit: req.query.limit, ...(req.query.after === undefined ? {} : { after: req.query.after }), ...(makers === undefined ? {} : { makers }) });
      const items: Static<typeof Batch>[] = page.items.map((b) => ({ batchId: b.batchId, maker: b.maker, kind: b.kind, deviceCount: b.deviceCount, createdAt: b.createdAt.toISOString(), importedAt: b.importedAt.toISOString() }));
      return { items, ...(page.next === undefined ? {} : { next: page.next }) };
    },
  });

  app.post('/api/v1/batches', {
    config: { scope: 'batches:write' },
    bodyLimit: ctx.batchBodyLimit,
    schema: {
      summary: 'Import a sealed batch of a maker of the caller\'s organisation',
      description: 'All or nothing: the signature is verified, the keys are unwrapped straight into custody, the devices join the maker\'s inventory. The signing maker must belong to the caller\'s organisation (any maker for admin).',
      tags: ['personalization'],
      operationId: 'importBatch',
      consumes: ['application/json'],
      body: SealedBatch,
      response: { 201: BatchReport, ...problems(400, 403, 409, 413, 415, 422, 503) },
    },
    // The body is a Buffer; it is checked by importSealedBatch, which names the first problem.
    validatorCompiler: () => () => true,
    handler: async (req, reply) => {
      if (!Buffer.isBuffer(req.body)) return sendProblem(reply, problem('BATCH_INVALID', 400, 'the body must be a sealed batch (JSON)'));
      const caller = callerOf(req);
      const report = await importSealedBatch({ storage: ctx.storage, custody: ctx.custody, actor: caller.actor, authorizeMaker: (maker) => requireOwnMaker(ctx.storage, caller, maker) }, req.body);
      return reply.code(201).send(report);
    },
  });
};
