import { type Static, Type } from '@sinclair/typebox';
import { unclaimDevices, updateClaimSettings } from '../../commissioning/bindings.js';
import { claimDevice, claimDevices } from '../../commissioning/claims.js';
import { CommissioningError } from '../../commissioning/errors.js';
import { parseClaimManifest } from '../../commissioning/manifest.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { Closed, NullableDateTime, problems } from '../schemas.js';
import { DevEuiHex, DeviceParams } from './devices.js';

/*
 * Claiming (docs/commissioning.md): with a DevEUI and claim code, a TR005 QR code, or a whole manifest. Every failed
 * claim is the same 403 CLAIM_FAILED, whether the device exists or not; failures are rate-limited per API key.
 */

const Options = {
  lock: Type.Optional(Type.Boolean({ description: 'afterwards nobody can claim the device away with its code (default true)' })),
  regenerate: Type.Optional(Type.Boolean({ description: 'replace the claim code with a new one, returned once (default false)' })),
};
const ClaimRequest = Type.Union(
  [
    Closed({ devEui: DevEuiHex, claimCode: Type.String({ minLength: 1, maxLength: 64 }), ...Options }),
    Closed({ qrCode: Type.String({ minLength: 1, maxLength: 1024, description: 'TR005 QR code content (LW:D0:…, or the older URN:LW:DP / URN:DEV:LW drafts)' }), ...Options }),
  ],
);
const Claimed = Closed({ devEui: Type.String(), owner: Type.String(), locked: Type.Boolean(), claimCode: Type.Optional(Type.String({ description: 'the new claim code, when regenerate was asked; shown once' })) });
const BulkClaimRequest = Type.Union([
  Closed({ manifest: Type.String({ minLength: 1, maxLength: 8 * 1024 * 1024, description: 'a maker\'s manifest, CSV or JSON, as `joinkeep batch seal` writes it' }), ...Options }),
  Closed({ items: Type.Array(Closed({ devEui: DevEuiHex, claimCode: Type.String({ minLength: 1, maxLength: 64 }) }), { minItems: 1, maxItems: 10_000 }), ...Options }),
]);
const BulkClaimed = Closed({
  claimed: Type.Integer(),
  failed: Type.Integer(),
  items: Type.Array(Closed({ devEui: Type.Union([Type.String(), Type.Null()]), outcome: Type.Union(['claimed', 'failed', 'invalid', 'rate-limited'].map((o) => Type.Literal(o))), claimCode: Type.Optional(Type.String()) })),
});
const DevEuiList = Closed({ devEuis: Type.Array(DevEuiHex, { minItems: 1, maxItems: 10_000 }) });
const ClaimSettings = Closed(
  { locked: Type.Optional(Type.Boolean()), regenerate: Type.Optional(Type.Boolean()), expiresAt: Type.Optional(NullableDateTime) },
  { minProperties: 1 },
);
const ClaimSettingsResult = Closed({ locked: Type.Boolean(), expiresAt: NullableDateTime, claimCode: Type.Optional(Type.String()) });

export const claimRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  const claims = { storage: ctx.storage, limiter: ctx.claimLimiter, now: ctx.now };
  const owner = { storage: ctx.storage, custody: ctx.custody, now: ctx.now };

  app.post<{ Body: Static<typeof ClaimRequest> }>('/api/v1/claims', {
    config: { scope: 'devices:claim' },
    schema: { summary: 'Claim a device with its claim code or its TR005 QR code', tags: ['claims'], operationId: 'claimDevice', body: ClaimRequest, response: { 201: Claimed, ...problems(400, 403, 429) } },
    handler: async (req, reply) => reply.code(201).send(await claimDevice(claims, callerOf(req), req.body)),
  });

  app.post<{ Body: Static<typeof BulkClaimRequest> }>('/api/v1/claims/bulk', {
    config: { scope: 'devices:claim' },
    schema: { summary: 'Claim every device of a manifest (each item succeeds or fails on its own)', tags: ['claims'], operationId: 'claimDevicesInBulk', body: BulkClaimRequest, response: { 200: BulkClaimed, ...problems(400, 403, 429) } },
    handler: async (req) => {
      const b = req.body;
      const items = 'manifest' in b ? parseClaimManifest(b.manifest) : b.items;
      return claimDevices(claims, callerOf(req), items, { ...(b.lock === undefined ? {} : { lock: b.lock }), ...(b.regenerate === undefined ? {} : { regenerate: b.regenerate }) });
    },
  });

  app.post<{ Body: Static<typeof DevEuiList> }>('/api/v1/claims/release', {
    config: { scope: 'devices:claim' },
    schema: { summary: 'Return your devices to their maker\'s stock (unbound, unowned, claimable again)', tags: ['claims'], operationId: 'unclaimDevices', body: DevEuiList, response: { 204: Type.Null(), ...problems(404, 409) } },
    handler: async (req, reply) => {
      await unclaimDevices(owner, callerOf(req), req.body.devEuis);
      return reply.code(204).send();
    },
  });

  app.delete<{ Params: Static<typeof DeviceParams> }>('/api/v1/devices/:devEui/claim', {
    config: { scope: 'devices:claim' },
    schema: { summary: 'Return one device to its maker\'s stock', tags: ['claims'], operationId: 'unclaimDevice', params: DeviceParams, response: { 204: Type.Null(), ...problems(404, 409) } },
    handler: async (req, reply) => {
      await unclaimDevices(owner, callerOf(req), [req.params.devEui]);
      return reply.code(204).send();
    },
  });

  app.patch<{ Params: Static<typeof DeviceParams>; Body: Static<typeof ClaimSettings> }>('/api/v1/devices/:devEui/claim', {
    config: { scope: 'devices:claim' },
    schema: { summary: 'Lock or unlock a device\'s claim code, regenerate it, or limit its validity', tags: ['claims'], operationId: 'updateClaimSettings', params: DeviceParams, body: ClaimSettings, response: { 200: ClaimSettingsResult, ...problems(400, 404) } },
    handler: async (req) => {
      if (req.body.expiresAt !== undefined && req.body.expiresAt !== null && Number.isNaN(Date.parse(req.body.expiresAt))) throw new CommissioningError('INVALID_INPUT', 'expiresAt must be an ISO 8601 date-time');
      return updateClaimSettings(owner, callerOf(req), req.params.devEui, req.body);
    },
  });
};
