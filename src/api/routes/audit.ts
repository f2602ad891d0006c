import { type Static, Type } from '@sinclair/typebox';
import { requireScope } from '../../commissioning/caller.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { Closed, DateTime, Page, PageQuery } from '../schemas.js';

/* The audit trail: an organisation reads its own events; the operator reads all. Events never carry keys. */

const AuditEvent = Closed({
  id: Type.Integer(),
  at: DateTime,
  actor: Type.String(),
  action: Type.String(),
  subject: Type.String(),
  outcome: Type.String(),
  organisation: Type.Union([Type.String(), Type.Null()]),
  details: Type.Record(Type.String(), Type.Unknown()),
});
const AuditQuery = Closed({ ...PageQuery.properties, subject: Type.Optional(Type.String({ maxLength: 200 })), action: Type.Optional(Type.String({ maxLength: 100 })) });

export const auditRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  app.get<{ Querystring: Static<typeof AuditQuery> }>('/api/v1/audit', {
    config: { scope: 'audit:read' },
    schema: { summary: 'Your organisation\'s audit trail, newest first', tags: ['audit'], operationId: 'listAuditEvents', querystring: AuditQuery, response: { 200: Page(AuditEvent) } },
    handler: async (req) => {
      const caller = callerOf(req);
      requireScope(caller, 'audit:read');
      const q = req.query;
      const page = await ctx.storage.listAudit({
        newestFirst: true, limit: q.limit, ...(q.after === undefined ? {} : { after: q.after }), ...(q.subject === undefined ? {} : { subject: q.subject }), ...(q.action === undefined ? {} : { action: q.action }),
        ...(caller.organisation === null ? {} : { organisation: caller.organisation }),
      });
      return { items: page.items.map((e) => ({ id: e.id ?? 0, at: e.at.toISOString(), actor: e.actor, action: e.action, subject: e.subject, outcome: e.outcome, organisation: e.organisation ?? null, details: { ...e.details } })), ...(page.next === undefined ? {} : { next: page.next }) };
    },
  });
};
