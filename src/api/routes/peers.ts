import { type Static, Type } from '@sinclair/typebox';
import { requireScope, isOperator } from '../../commissioning/caller.js';
import { CommissioningError } from '../../commissioning/errors.js';
import { addApplicationServer, addNetworkServer, kekUsableBy } from '../../commissioning/peers.js';
import type { PeerRecord } from '../../storage/storage.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { Closed, DateTime, problems } from '../schemas.js';
import { NetIdHex } from './devices.js';

/*
 * Peers (network servers and application servers) of an organisation, and the KEK labels they use — labels only:
 * a KEK's value never leaves custody, and KEKs reach Joinkeep only through `joinkeep kek add` by the operator.
 * A network operator registers servers of its own NetIDs; an application-server operator its own AS-IDs.
 */

const Peer = Closed({
  id: Type.String(),
  kind: Type.Union([Type.Literal('ns'), Type.Literal('as'), Type.Literal('claim')]),
  netId: Type.Union([Type.String(), Type.Null()]),
  nsId: Type.Union([Type.String(), Type.Null()]),
  asId: Type.Union([Type.String(), Type.Null()]),
  kekLabel: Type.Union([Type.String(), Type.Null()]),
  authentication: Type.Array(Type.Union([Type.Literal('bearer-token'), Type.Literal('client-certificate')])),
  createdAt: DateTime,
});
const NewPeer = Type.Union([
  Closed({
    kind: Type.Literal('ns'), netId: NetIdHex, nsId: Type.Optional(Type.String({ pattern: '^[0-9A-Fa-f]{16}$' })),
    token: Type.Optional(Type.String({ minLength: 16, maxLength: 512, description: 'bearer token the server will send (stored hashed)' })),
    clientCertSha256: Type.Optional(Type.String({ pattern: '^[0-9A-Fa-f]{64}$', description: 'SHA-256 fingerprint of its TLS client certificate' })),
    kekLabel: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'a KEK the operator added (`joinkeep kek add`)' })),
  }),
  Closed({
    kind: Type.Literal('as'), asId: Type.String({ minLength: 1, maxLength: 128 }),
    token: Type.Optional(Type.String({ minLength: 16, maxLength: 512 })),
    clientCertSha256: Type.Optional(Type.String({ pattern: '^[0-9A-Fa-f]{64}$' })),
    kekLabel: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  }),
]);

const peerView = (p: PeerRecord): Static<typeof Peer> => ({
  id: p.id, kind: p.kind, netId: p.netId, nsId: p.nsId, asId: p.asId, kekLabel: p.kekLabel,
  authentication: [...(p.tokenSha256 !== null ? ['bearer-token' as const] : []), ...(p.clientCertSha256 !== null ? ['client-certificate' as const] : [])],
  createdAt: p.createdAt.toISOString(),
});

export const peerRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  app.get('/api/v1/peers', {
    config: { scope: 'peers:read' },
    schema: { summary: 'Your organisation\'s network servers, application servers and claim clients', tags: ['peers'], operationId: 'listPeers', response: { 200: Closed({ items: Type.Array(Peer) }) } },
    handler: async (req) => {
      const caller = callerOf(req);
      requireScope(caller, 'peers:read');
      const peers = await ctx.storage.listPeers(caller.organisation === null ? {} : { organisation: caller.organisation });
      return { items: peers.map(peerView) };
    },
  });

  app.post<{ Body: Static<typeof NewPeer> }>('/api/v1/peers', {
    config: { scope: 'peers:write' },
    schema: { summary: 'Register one of your network servers (NetID you operate) or application servers (AS-ID you operate)', tags: ['peers'], operationId: 'addPeer', body: NewPeer, response: { 201: Peer, ...problems(400, 403, 409) } },
    handler: async (req, reply) => {
      const caller = callerOf(req);
      requireScope(caller, 'peers:write');
      const b = req.body;
      const org = caller.organisation === null ? undefined : await ctx.storage.getOrganisation(caller.organisation);
      if (!isOperator(caller)) {
        const mine = b.kind === 'ns' ? org?.roles.includes('network-operator') && org.netIds.includes(b.netId.toUpperCase() as never) : org?.roles.includes('as-operator') && org.asIds.includes(b.asId);
        if (!mine) throw new CommissioningError('FORBIDDEN', b.kind === 'ns' ? `NetID ${b.netId} is not operated by your organisation` : `AS-ID ${b.asId} is not operated by your organisation`);
      }
      if (b.token === undefined && b.clientCertSha256 === undefined) throw new CommissioningError('INVALID_INPUT', 'a peer authenticates with a token, a client certificate, or both: give at least one');
      const deps = { storage: ctx.storage, custody: ctx.custody, audit: ctx.audit, actor: caller.actor };
      const own = caller.organisation;
      const kekUsable = own === null ? undefined : (label: string) => kekUsableBy(ctx.storage, own, label);
      const credentials = { token: b.token, clientCertSha256: b.clientCertSha256?.toLowerCase(), kekLabel: b.kekLabel, kekUsable };
      const peer = b.kind === 'ns' ? await addNetworkServer(deps, { netId: b.netId, nsId: b.nsId, ...credentials }) : await addApplicationServer(deps, { asId: b.asId, ...credentials });
      if (caller.organisation !== null) {
        await ctx.storage.setPeerOrganisation(peer.id, caller.organisation);
        // The organisation's own trail shows its new peer too (peer.add above is the operator's view).
        await ctx.audit.appendAudit({ at: ctx.now(), actor: caller.actor, action: 'peer.add', subject: `peer/${peer.id}`, outcome: 'success', organisation: caller.organisation, details: { kind: peer.kind, kekLabel: peer.kekLabel } });
      }
      return reply.code(201).send(peerView(peer));
    },
  });

  app.get('/api/v1/keks', {
    config: { scope: 'keks:read' },
    schema: { summary: 'KEK labels your peers use (labels only: KEK values never leave custody)', tags: ['peers'], operationId: 'listKeks', response: { 200: Closed({ items: Type.Array(Closed({ label: Type.String(), usedBy: Type.Array(Type.String()), inCustody: Type.Boolean() })) }) } },
    handler: async (req) => {
      const caller = callerOf(req);
      requireScope(caller, 'keks:read');
      const peers = await ctx.storage.listPeers(caller.organisation === null ? {} : { organisation: caller.organisation });
      const held = new Set((await ctx.custody.listKeys()).filter((k) => k.usage === 'kek').map((k) => k.handle.replace(/^kek\//, '')));
      const labels = new Map<string, string[]>();
      if (caller.organisation === null) for (const label of held) labels.set(label, []);
      for (const p of peers) if (p.kekLabel !== null) labels.set(p.kekLabel, [...(labels.get(p.kekLabel) ?? []), p.id]);
      return { items: [...labels].sort(([a], [b]) => a.localeCompare(b)).map(([label, usedBy]) => ({ label, usedBy, inCustody: held.has(label) })) };
    },
  });
};
