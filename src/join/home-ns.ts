import type { Eui64, HomeNsReqMessage, NetId } from '../protocol/index.js';
import type { PeerRecord } from '../storage/storage.js';
import type { JoinContext } from './context.js';
import { JoinError } from './errors.js';
import { loadDevice, receiverJoinEui } from './steps.js';

export interface HomeNetwork {
  readonly devEui: Eui64;
  readonly homeNetId: NetId;
  readonly homeNsId: Eui64 | null;
}

/**
 * HomeNSReq (TS002-1.0 §12): a visited network asks for the device's home NetID. Answered from the device's
 * binding at the moment of the request; refused with NoRoamingAgreement to networks outside its roaming policy.
 */
export async function handleHomeNsRequest(ctx: JoinContext, caller: PeerRecord, msg: HomeNsReqMessage): Promise<HomeNetwork> {
  const device = await loadDevice(ctx, msg.devEui, receiverJoinEui(msg.header.receiverId));
  const asker = caller.netId!;
  const allowed = asker === device.homeNetId || device.roamingNetIds === null || device.roamingNetIds.includes(asker);
  if (!allowed) throw new JoinError('NO_ROAMING_AGREEMENT', `network ${asker} may not learn the home network of device ${device.devEui}`);
  await ctx.storage.appendAudit({
    at: ctx.now(),
    actor: caller.id,
    action: 'homens.answer',
    subject: `device/${device.devEui}`,
    outcome: 'Success',
    details: { homeNetId: device.homeNetId, askedBy: asker },
  });
  return { devEui: device.devEui, homeNetId: device.homeNetId, homeNsId: device.homeNsId };
}
