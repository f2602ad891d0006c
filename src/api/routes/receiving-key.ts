import { Type } from '@sinclair/typebox';
import { currentReceivingKey } from '../../provisioning/receiving-keys.js';
import type { ApiRoutes } from '../context.js';
import { problem, sendProblem } from '../problems.js';
import { Closed, problems } from '../schemas.js';

/** The public half of the receiving key: only these members are ever written (no private member can slip through). */
const ReceivingKey = Closed(
  {
    kty: Type.Literal('RSA'),
    n: Type.String(),
    e: Type.String(),
    alg: Type.Union([Type.Literal('RSA-OAEP-256'), Type.Literal('RSA-OAEP')], { description: 'the RSA-OAEP hash this installation unwraps' }),
    use: Type.Literal('enc'),
    kid: Type.String({ description: 'RFC 7638 thumbprint' }),
  },
  { description: 'public JWK (RFC 7517)' },
);

export const receivingKeyRoutes: ApiRoutes = (app, ctx) => {
  app.get('/api/v1/receiving-key', {
    config: { scope: 'public' },
    schema: {
      summary: 'The receiving key makers seal batches to (public JWK)',
      tags: ['personalization'],
      operationId: 'getReceivingKey',
      response: { 200: { description: 'the newest receiving key', content: { 'application/jwk+json': { schema: ReceivingKey } } }, ...problems(404) },
    },
    handler: async (_req, reply) => {
      const newest = await currentReceivingKey(ctx.custody);
      if (newest === undefined) return sendProblem(reply, problem('NOT_FOUND', 404, 'this Join Server has no receiving key yet (`joinkeep receiving-key create`)'));
      return reply.type('application/jwk+json').send(newest.jwk);
    },
  });
};
