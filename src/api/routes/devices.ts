import { type Static, Type } from '@sinclair/typebox';
import { resetDevNonces } from '../../commissioning/bindings.js';
import { requireScope } from '../../commissioning/caller.js';
import { type CommissioningStorage, visibleDevice } from '../../commissioning/device-access.js';
import { activationView, deviceView, refusalView } from '../../commissioning/device-views.js';
import { parseInput } from '../../commissioning/parse-input.js';
import { type Eui64, eui64FromBeHex } from '../../protocol/index.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { Closed, DateTime, NullableDateTime, Page, PageQuery, problems } from '../schemas.js';

/*
 * Devices as their owner (or, for unclaimed stock, their maker) sees them: identity, ownership, claim state, binding,
 * recent activations. Never a key or a key handle. A device the caller may not see is a 404 like an unknown DevEUI.
 */

export const DevEuiHex = Type.String({ pattern: '^[0-9A-Fa-f]{16}$', description: 'DevEUI, 16 hex digits' });
export const NetIdHex = Type.String({ pattern: '^[0-9A-Fa-f]{6}$', description: 'NetID, 6 hex digits' });
export const DeviceParams = Closed({ devEui: DevEuiHex });

export const Roaming = Type.Union([Type.Literal('home-only'), Type.Literal('any-agreement'), Type.Array(NetIdHex, { maxItems: 1000, description: 'NetIDs allowed to learn the home network via HomeNSReq' })], {
  description: 'who may learn the home network via HomeNSReq: nobody but the home network, any network with an agreement, or these NetIDs',
});

export const Binding = Closed({
  homeNetId: Type.String(),
  homeNsId: Type.Union([Type.String(), Type.Null()]),
  asId: Type.Union([Type.String(), Type.Null()]),
  roaming: Roaming,
  nsKekLabel: Type.Union([Type.String(), Type.Null()]),
  asKekLabel: Type.Union([Type.String(), Type.Null()]),
  boundAt: NullableDateTime,
});

export const Device = Closed({
  devEui: Type.String(),
  joinEui: Type.String(),
  macVersion: Type.String(),
  owner: Type.Union([Type.String(), Type.Null()], { description: 'owning organisation; null = unclaimed (its maker\'s stock)' }),
  maker: Type.Union([Type.String(), Type.Null()]),
  batchId: Type.Union([Type.String(), Type.Null()]),
  serialNumber: Type.Union([Type.String(), Type.Null()]),
  profile: Type.Union([Type.String(), Type.Null()]),
  claim: Closed({ hasClaimCode: Type.Boolean(), locked: Type.Boolean(), expiresAt: NullableDateTime, claimedAt: NullableDateTime }),
  binding: Type.Union([Binding, Type.Null()], { description: 'null = unbound: no network can activate the device' }),
  createdAt: DateTime,
});

const Nullable = <T extends ReturnType<typeof Type.String> | ReturnType<typeof Type.Integer>>(t: T) => Type.Union([t, Type.Null()]);
const Activation = Closed({
  at: DateTime,
  outcome: Type.Union([Type.Literal('accepted'), Type.Literal('refused')]),
  result: Type.String({ description: 'Success, or why a known device was refused: MIC_FAILED (wrong key), DEV_NONCE_REPLAYED, ACTIVATION_DISALLOWED (not the home network), …' }),
  description: Nullable(Type.String()),
  sender: Nullable(Type.String({ description: 'the network server that asked (refusals)' })),
  sessionKeyId: Nullable(Type.String()),
  joinEui: Nullable(Type.String()),
  scheme: Nullable(Type.String({ description: 'legacy (LoRaWAN 1.0.x keys) or lorawan11' })),
  joinNonce: Nullable(Type.Integer()),
  devNonce: Nullable(Type.Integer()),
  netId: Nullable(Type.String()),
  devAddr: Nullable(Type.String()),
});

const DeviceListQuery = Closed({
  ...PageQuery.properties,
  bound: Type.Optional(Type.Boolean({ description: 'true: bound devices only; false: unbound only' })),
  joinEui: Type.Optional(DevEuiHex),
  macVersion: Type.Optional(Type.String({ maxLength: 8 })),
  batchId: Type.Optional(Type.String({ maxLength: 200 })),
});

const eui = (text: string): Eui64 => parseInput(() => eui64FromBeHex(text, 'joinEui'));

export const deviceRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  const storage: CommissioningStorage = ctx.storage;

  app.get<{ Querystring: Static<typeof DeviceListQuery> }>('/api/v1/devices', {
    config: { scope: 'devices:read' },
    schema: { summary: 'List the devices you can see (yours, and your makers\' unclaimed stock)', tags: ['devices'], operationId: 'listDevices', querystring: DeviceListQuery, response: { 200: Page(Device) } },
    handler: async (req) => {
      const caller = callerOf(req);
      requireScope(caller, 'devices:read');
      const q = req.query;
      const page = await storage.listOwnedDevices(caller.organisation, {
        limit: q.limit, ...(q.after === undefined ? {} : { after: q.after }), ...(q.bound === undefined ? {} : { bound: q.bound }),
        ...(q.joinEui === undefined ? {} : { joinEui: eui(q.joinEui) }), ...(q.macVersion === undefined ? {} : { macVersion: q.macVersion }), ...(q.batchId === undefined ? {} : { batchId: q.batchId }),
      });
      return { items: page.items.map(deviceView), ...(page.next === undefined ? {} : { next: page.next }) };
    },
  });

  app.get<{ Params: Static<typeof DeviceParams> }>('/api/v1/devices/:devEui', {
    config: { scope: 'devices:read' },
    schema: { summary: 'One device: ownership, claim state, binding', tags: ['devices'], operationId: 'getDevice', params: DeviceParams, response: { 200: Device, ...problems(404) } },
    handler: async (req) => deviceView(await visibleDevice(storage, callerOf(req), req.params.devEui, 'devices:read')),
  });

  app.get<{ Params: Static<typeof DeviceParams> }>('/api/v1/devices/:devEui/activations', {
    config: { scope: 'devices:read' },
    schema: { summary: 'Recent activations of a device: accepted Join/Rejoin-requests and refusals with their reason, newest first', tags: ['devices'], operationId: 'listActivations', params: DeviceParams, response: { 200: Closed({ items: Type.Array(Activation) }), ...problems(404) } },
    handler: async (req) => {
      const found = await visibleDevice(storage, callerOf(req), req.params.devEui, 'devices:read');
      const sessions = found.bound ? await storage.listSessions(found.device.devEui) : [];
      // Refusals since the current owner has the device (a previous owner's are not its business).
      const since = found.commissioning.claimedAt?.getTime() ?? 0;
      const subject = `device/${found.device.devEui}`;
      const refusals = (
        await Promise.all(['join.refuse', 'rejoin.refuse'].map(async (action) => (await storage.listAudit({ subject, action, limit: 100, newestFirst: true })).items))
      ).flat().filter((e) => e.at.getTime() >= since);
      const items = [...sessions.map(activationView), ...refusals.map(refusalView)].sort((a, b) => b.at.localeCompare(a.at) || (b.joinNonce ?? 0) - (a.joinNonce ?? 0));
      return { items: items.slice(0, 200) };
    },
  });

  app.post<{ Params: Static<typeof DeviceParams> }>('/api/v1/devices/:devEui/dev-nonce-reset', {
    config: { scope: 'devices:bind' },
    schema: { summary: 'Forget the DevNonces seen from a device that lost its counter (audited; the JoinNonce continues)', tags: ['devices'], operationId: 'resetDevNonces', params: DeviceParams, response: { 204: Type.Null(), ...problems(404) } },
    handler: async (req, reply) => {
      await resetDevNonces({ storage, custody: ctx.custody, now: ctx.now }, callerOf(req), req.params.devEui);
      return reply.code(204).send();
    },
  });
};
