import { type Static, Type } from '@sinclair/typebox';
import { bindDevices, unbindDevices } from '../../commissioning/bindings.js';
import { deviceView } from '../../commissioning/device-views.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { Closed, problems } from '../schemas.js';
import { DevEuiHex, Device, DeviceParams, NetIdHex, Roaming } from './devices.js';

/*
 * Binding (docs/commissioning.md): the owner points devices at a home network (NetID, optional NSID) and an application
 * server, optionally naming which of their KEKs wraps the session keys, and says who may learn the home network by
 * HomeNSReq. Joins and HomeNSReq follow the binding from the next request on.
 */

const BindingInput = Closed({
  homeNetId: NetIdHex,
  homeNsId: Type.Optional(Type.Union([Type.String({ pattern: '^[0-9A-Fa-f]{16}$' }), Type.Null()])),
  asId: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Null()])),
  nsKekLabel: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Null()], { description: 'one of the home network servers\' KEKs; default: the server\'s own' })),
  asKekLabel: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Null()], { description: 'the application server\'s KEK; default: its own' })),
  roaming: Type.Optional(Roaming),
});
const BindRequest = Closed({ devEuis: Type.Array(DevEuiHex, { minItems: 1, maxItems: 10_000 }), binding: BindingInput });
const DevEuiList = Closed({ devEuis: Type.Array(DevEuiHex, { minItems: 1, maxItems: 10_000 }) });

export const bindingRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  const owner = { storage: ctx.storage, custody: ctx.custody, now: ctx.now };
  const views = async (devEuis: readonly string[]) => Promise.all(devEuis.map(async (d) => deviceView((await ctx.storage.findDevice(d as never))!)));

  app.post<{ Body: Static<typeof BindRequest> }>('/api/v1/bindings', {
    config: { scope: 'devices:bind' },
    schema: { summary: 'Bind a group of your devices to a home network and an application server', tags: ['bindings'], operationId: 'bindDevices', body: BindRequest, response: { 200: Closed({ items: Type.Array(Device) }), ...problems(400, 404) } },
    handler: async (req) => {
      const bound = await bindDevices(owner, callerOf(req), req.body.devEuis, req.body.binding);
      return { items: await views(bound.map((d) => d.devEui)) };
    },
  });

  app.post<{ Body: Static<typeof DevEuiList> }>('/api/v1/bindings/unbind', {
    config: { scope: 'devices:bind' },
    schema: { summary: 'Unbind a group of your devices: no network can activate them until bound again', tags: ['bindings'], operationId: 'unbindDevices', body: DevEuiList, response: { 204: Type.Null(), ...problems(404, 409) } },
    handler: async (req, reply) => {
      await unbindDevices(owner, callerOf(req), req.body.devEuis);
      return reply.code(204).send();
    },
  });

  app.put<{ Params: Static<typeof DeviceParams>; Body: Static<typeof BindingInput> }>('/api/v1/devices/:devEui/binding', {
    config: { scope: 'devices:bind' },
    schema: { summary: 'Bind one device (replaces its binding)', tags: ['bindings'], operationId: 'bindDevice', params: DeviceParams, body: BindingInput, response: { 200: Device, ...problems(400, 404) } },
    handler: async (req) => {
      const [bound] = await bindDevices(owner, callerOf(req), [req.params.devEui], req.body);
      return (await views([bound!.devEui]))[0];
    },
  });

  app.delete<{ Params: Static<typeof DeviceParams> }>('/api/v1/devices/:devEui/binding', {
    config: { scope: 'devices:bind' },
    schema: { summary: 'Unbind one device', tags: ['bindings'], operationId: 'unbindDevice', params: DeviceParams, response: { 204: Type.Null(), ...problems(404, 409) } },
    handler: async (req, reply) => {
      await unbindDevices(owner, callerOf(req), [req.params.devEui]);
      return reply.code(204).send();
    },
  });
};
