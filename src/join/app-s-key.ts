import { type AppSKeyReqMessage, legacySessionKeyBlock, lorawan11SessionKeyBlock } from '../protocol/index.js';
import type { ExportedKey } from '../custody/custody.js';
import type { PeerRecord } from '../storage/storage.js';
import type { JoinContext } from './context.js';
import { JoinError } from './errors.js';
import { destinationFor } from './key-delivery.js';
import { appSKeyRoot } from './session-plan.js';
import { loadDevice, receiverJoinEui } from './steps.js';

export interface AppSKeyDelivery {
  readonly devEui: string;
  readonly sessionKeyId: string;
  readonly appSKey: ExportedKey;
}

/**
 * AppSKeyReq (TS002-1.0 §11): only the device's application server, as bound at the moment of the request,
 * gets the AppSKey, wrapped under its KEK. The key is derived again in custody from the root key and the
 * stored session inputs; it is never stored.
 */
export async function handleAppSKeyRequest(ctx: JoinContext, caller: PeerRecord, msg: AppSKeyReqMessage): Promise<AppSKeyDelivery> {
  const device = await loadDevice(ctx, msg.devEui, receiverJoinEui(msg.header.receiverId));
  // Another application server learns nothing about the device, not even that it exists.
  if (device.asId === null || device.asId !== caller.asId) throw new JoinError('UNKNOWN_DEVICE', `no device ${msg.devEui} for application server ${caller.asId ?? '?'}`);
  const session = await ctx.storage.getSession(device.devEui, msg.sessionKeyId);
  if (session === undefined) throw new JoinError('UNKNOWN_SESSION', `no session ${msg.sessionKeyId} for device ${device.devEui}`);

  const to = await destinationFor(ctx.custody, caller, 'application server', device.asKekLabel ?? null);
  const block =
    session.scheme === 'legacy'
      ? legacySessionKeyBlock('AppSKey', { joinNonce: session.joinNonce, netId: session.netId, devNonce: session.devNonce })
      : lorawan11SessionKeyBlock('AppSKey', { joinNonce: session.joinNonce, joinEui: session.joinEui, devNonce: session.devNonce });
  const [appSKey] = await ctx.custody.deriveAndExport(appSKeyRoot(device, session.scheme), [{ block, to }]);
  await ctx.storage.appendAudit({
    at: ctx.now(),
    actor: caller.id,
    action: 'appskey.deliver',
    subject: `device/${device.devEui}`,
    outcome: 'Success',
    details: { sessionKeyId: session.sessionKeyId, kekLabel: appSKey!.kekLabel },
  });
  return { devEui: device.devEui, sessionKeyId: session.sessionKeyId, appSKey: appSKey! };
}
