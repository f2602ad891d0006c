import { type Static, Type } from '@sinclair/typebox';
import { acceptTransfer, cancelTransfer, getTransfer, listTransfers, offerTransfer } from '../../commissioning/ownership-transfers.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { Closed, DateTime, NullableDateTime, Page, PageQuery, problems } from '../schemas.js';
import { DevEuiHex } from './devices.js';

/*
 * Fleet transfer between organisations (docs/commissioning.md). Accepting moves the devices to the recipient, unbound:
 * the previous owner's network and application server are refused from then on; keys and JoinNonces are untouched.
 */

const Transfer = Closed({
  id: Type.String({ format: 'uuid' }),
  from: Type.String(),
  to: Type.Union([Type.String(), Type.Null()], { description: 'null: a token offer' }),
  devEuis: Type.Array(Type.String()),
  state: Type.Union(['offered', 'accepted', 'cancelled', 'expired'].map((s) => Type.Literal(s))),
  createdAt: DateTime,
  expiresAt: NullableDateTime,
  decidedAt: NullableDateTime,
  acceptedBy: Type.Union([Type.String(), Type.Null()]),
});
const Offer = Closed({
  devEuis: Type.Array(DevEuiHex, { minItems: 1, maxItems: 10_000 }),
  to: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9-]{1,62}$', description: 'the recipient organisation; absent = a token offer' })),
  expiresInS: Type.Optional(Type.Integer({ minimum: 60, maximum: 7_776_000, description: 'seconds the offer stays open (default 604800, 7 days)' })),
});
const Offered = Closed({ transfer: Transfer, token: Type.Optional(Type.String({ description: 'token offers: the one-time token to give the recipient; shown once' })) });
const TransferParams = Closed({ id: Type.String({ format: 'uuid' }) });
const AcceptByToken = Closed({ token: Type.String({ minLength: 8, maxLength: 256 }) });

export const transferRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  const deps = { storage: ctx.storage, now: ctx.now };

  app.post<{ Body: Static<typeof Offer> }>('/api/v1/transfers', {
    config: { scope: 'devices:transfer' },
    schema: { summary: 'Offer your devices to another organisation, or to whoever presents a one-time token', tags: ['transfers'], operationId: 'offerTransfer', body: Offer, response: { 201: Offered, ...problems(400, 404) } },
    handler: async (req, reply) => reply.code(201).send(await offerTransfer(deps, callerOf(req), req.body)),
  });

  app.get<{ Querystring: PageQuery }>('/api/v1/transfers', {
    config: { scope: 'devices:read' },
    schema: { summary: 'Transfers offered by or to your organisation, newest first', tags: ['transfers'], operationId: 'listTransfers', querystring: PageQuery, response: { 200: Page(Transfer) } },
    handler: async (req) => listTransfers(deps, callerOf(req), { limit: req.query.limit, ...(req.query.after === undefined ? {} : { after: req.query.after }) }),
  });

  app.get<{ Params: Static<typeof TransferParams> }>('/api/v1/transfers/:id', {
    config: { scope: 'devices:read' },
    schema: { summary: 'One transfer', tags: ['transfers'], operationId: 'getTransfer', params: TransferParams, response: { 200: Transfer, ...problems(404) } },
    handler: async (req) => getTransfer(deps, callerOf(req), req.params.id),
  });

  app.post<{ Params: Static<typeof TransferParams> }>('/api/v1/transfers/:id/accept', {
    config: { scope: 'devices:transfer' },
    schema: { summary: 'Accept a transfer offered directly to your organisation', tags: ['transfers'], operationId: 'acceptTransfer', params: TransferParams, response: { 200: Transfer, ...problems(404, 409) } },
    handler: async (req) => acceptTransfer(deps, callerOf(req), { id: req.params.id }),
  });

  app.post<{ Body: Static<typeof AcceptByToken> }>('/api/v1/transfers/accept', {
    config: { scope: 'devices:transfer' },
    schema: { summary: 'Accept a token offer with its token', tags: ['transfers'], operationId: 'acceptTransferByToken', body: AcceptByToken, response: { 200: Transfer, ...problems(404, 409) } },
    handler: async (req) => acceptTransfer(deps, callerOf(req), { token: req.body.token }),
  });

  app.delete<{ Params: Static<typeof TransferParams> }>('/api/v1/transfers/:id', {
    config: { scope: 'devices:transfer' },
    schema: { summary: 'Withdraw an open offer', tags: ['transfers'], operationId: 'cancelTransfer', params: TransferParams, response: { 204: Type.Null(), ...problems(404, 409) } },
    handler: async (req, reply) => {
      await cancelTransfer(deps, callerOf(req), req.params.id);
      return reply.code(204).send();
    },
  });
};
