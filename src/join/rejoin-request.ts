import {
  JOIN_REQ_TYPE,
  type JoinReqMessage,
  checkRjCount1,
  decodeRejoinRequest,
  isLoRaWAN11,
  lifetimeKeyBlock,
} from '../protocol/index.js';
import type { PeerRecord } from '../storage/storage.js';
import type { Activation } from './activation.js';
import type { JoinContext } from './context.js';
import { JoinError } from './errors.js';
import { requireNwkKey } from './session-plan.js';
import {
  acceptAudit,
  authoriseHomeNetwork,
  completeActivation,
  loadDeviceForJoin,
  receiverJoinEui,
  reserveJoinNonce,
  resolveKeyDestinations,
  sessionRecord,
  verifyMic,
} from './steps.js';

/**
 * RejoinReq (TS002-1.0 §15, LoRaWAN 1.1 §6.2.4), LoRaWAN 1.1 devices only.
 * Type 1: the Join Server checks the MIC (JSIntKey) and that RJcount1 increased.
 * Types 0/2: the MIC is under SNwkSIntKey, which only the home NS holds; it verified the frame and RJcount0
 * before forwarding it (TS002-1.0 §11.4.1 step 7), so the Join Server trusts the authenticated home NS.
 * Every answer: OptNeg=1, MIC with JSIntKey over JoinReqType|JoinEUI|RJcount, encrypted with JSEncKey,
 * session keys with RJcount in the DevNonce slot.
 */
export async function handleRejoinRequest(ctx: JoinContext, caller: PeerRecord, msg: JoinReqMessage): Promise<Activation> {
  const frame = decodeRejoinRequest(msg.phyPayload);
  const joinEui = receiverJoinEui(msg.header.receiverId);
  if (frame.devEui !== msg.devEui) throw new JoinError('FRAME_MISMATCH', `DevEUI ${msg.devEui} differs from the Rejoin-request's DevEUI ${frame.devEui}`);
  if (frame.rejoinType === 1 && frame.joinEui !== joinEui) {
    throw new JoinError('FRAME_MISMATCH', `ReceiverID ${joinEui} differs from the Rejoin-request's JoinEUI ${frame.joinEui}`);
  }

  const { device, seen } = await loadDeviceForJoin(ctx, frame.devEui, joinEui);
  authoriseHomeNetwork(device, caller, msg.header.senderNsId);
  if (!isLoRaWAN11(device.macVersion)) {
    throw new JoinError('REJOIN_NOT_SUPPORTED', `device ${device.devEui} is LoRaWAN ${device.macVersion}; Rejoin-requests exist only in LoRaWAN 1.1`);
  }
  if (!isLoRaWAN11(msg.macVersion)) {
    throw new JoinError('MAC_VERSION_UNSUPPORTED', `a RejoinReq must carry MACVersion 1.1, got ${msg.macVersion}`);
  }
  const nwkKey = requireNwkKey(device);
  const jsIntKey = { handle: nwkKey, derive: lifetimeKeyBlock('JSIntKey', device.devEui) };
  const destinations = await resolveKeyDestinations(ctx, device, caller);

  if (frame.rejoinType === 1) await verifyMic(ctx.custody, jsIntKey, frame.micInput, frame.mic, 'Rejoin-request type 1');

  const rjCount = frame.rejoinType === 1 ? frame.rjCount1 : frame.rjCount0;
  const plan = { scheme: 'lorawan11', nwkRoot: nwkKey, appRoot: device.appKeyHandle } as const;
  const reserved = await ctx.storage.reserveJoin(
    device.devEui,
    device.joinEui,
    (current) => {
      if (frame.rejoinType === 1 && !checkRjCount1(current.lastRjCount1, frame.rjCount1)) {
        return { refuse: new JoinError('RJCOUNT1_REPLAYED', `RJcount1 ${frame.rjCount1} of device ${device.devEui} is not greater than the last one`) };
      }
      const joinNonce = reserveJoinNonce(device, current);
      if (joinNonce instanceof JoinError) return { refuse: joinNonce };
      const session = sessionRecord(ctx, device, { scheme: 'lorawan11', joinNonce, devNonce: rjCount, netId: caller.netId!, devAddr: msg.devAddr });
      return {
        commit: { ...current, lastJoinNonce: joinNonce, lastRjCount1: frame.rejoinType === 1 ? frame.rjCount1 : current.lastRjCount1 },
        session,
        audit: acceptAudit(caller, session, 'rejoin.accept', { messageType: 'RejoinReq', rejoinType: frame.rejoinType, rjCount }),
      };
    },
    { sessionLimit: ctx.settings.sessionLimit, seen },
  );
  if ('refused' in reserved) throw reserved.refused;

  return completeActivation(ctx, msg, reserved.session, plan, destinations, {
    micKey: jsIntKey,
    encryptionKey: { handle: nwkKey, derive: lifetimeKeyBlock('JSEncKey', device.devEui) },
    mic11: { joinReqType: JOIN_REQ_TYPE[`rejoin${frame.rejoinType}`], joinEui: device.joinEui, devNonce: rjCount },
  });
}
