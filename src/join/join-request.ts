import {
  JOIN_REQ_TYPE,
  type JoinReqMessage,
  checkDevNonceCounter,
  checkDevNonceRandom,
  decodeJoinRequest,
  lifetimeKeyBlock,
  usesDevNonceCounter,
} from '../protocol/index.js';
import type { PeerRecord } from '../storage/storage.js';
import type { Activation } from './activation.js';
import type { JoinContext } from './context.js';
import { JoinError } from './errors.js';
import { planSession } from './session-plan.js';
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
 * JoinReq (TS002-1.0 §8, spec-notes §1.11) as named steps. Everything before reserveJoin only reads;
 * the DevNonce check and the JoinNonce increment commit together, and the answer is built after the commit.
 */
export async function handleJoinRequest(ctx: JoinContext, caller: PeerRecord, msg: JoinReqMessage): Promise<Activation> {
  const frame = decodeJoinRequest(msg.phyPayload);
  const joinEui = receiverJoinEui(msg.header.receiverId);
  if (frame.devEui !== msg.devEui) throw new JoinError('FRAME_MISMATCH', `DevEUI ${msg.devEui} differs from the Join-request's DevEUI ${frame.devEui}`);
  if (frame.joinEui !== joinEui) throw new JoinError('FRAME_MISMATCH', `ReceiverID ${joinEui} differs from the Join-request's JoinEUI ${frame.joinEui}`);

  const { device, seen } = await loadDeviceForJoin(ctx, frame.devEui, frame.joinEui);
  authoriseHomeNetwork(device, caller, msg.header.senderNsId);
  const plan = planSession(device, msg.macVersion);
  const destinations = await resolveKeyDestinations(ctx, device, caller);

  // LoRaWAN 1.1 §6.2.2: the Join-request MIC is always under NwkKey for a 1.1 device, AppKey for 1.0.x.
  await verifyMic(ctx.custody, { handle: plan.nwkRoot }, frame.micInput, frame.mic, 'Join-request');

  const counter = usesDevNonceCounter(device.macVersion);
  const reserved = await ctx.storage.reserveJoin(
    device.devEui,
    device.joinEui,
    (current) => {
      const verdict = counter
        ? checkDevNonceCounter(current, frame.devNonce)
        : checkDevNonceRandom(current, frame.devNonce, ctx.settings.devNonceHistory);
      if (!verdict.ok) {
        return { refuse: new JoinError('DEV_NONCE_REPLAYED', `DevNonce ${frame.devNonce} of device ${device.devEui} was ${counter ? 'not greater than the last one' : 'used before'}`) };
      }
      const joinNonce = reserveJoinNonce(device, current);
      if (joinNonce instanceof JoinError) return { refuse: joinNonce };
      const session = sessionRecord(ctx, device, { scheme: plan.scheme, joinNonce, devNonce: frame.devNonce, netId: caller.netId!, devAddr: msg.devAddr });
      return {
        commit: { ...current, ...verdict.next, lastJoinNonce: joinNonce },
        session,
        audit: acceptAudit(caller, session, 'join.accept', { messageType: 'JoinReq', devNonce: frame.devNonce, macVersion: msg.macVersion, scheme: plan.scheme }),
      };
    },
    { sessionLimit: ctx.settings.sessionLimit, seen },
  );
  if ('refused' in reserved) throw reserved.refused;

  const lorawan11 = plan.scheme === 'lorawan11';
  return completeActivation(ctx, msg, reserved.session, plan, destinations, {
    micKey: lorawan11 ? { handle: plan.nwkRoot, derive: lifetimeKeyBlock('JSIntKey', device.devEui) } : { handle: plan.nwkRoot },
    // LoRaWAN 1.1 §6.2.3: an answer to a Join-request is encrypted with NwkKey (AppKey for 1.0.x), whatever OptNeg.
    encryptionKey: { handle: plan.nwkRoot },
    mic11: lorawan11 ? { joinReqType: JOIN_REQ_TYPE.joinRequest, joinEui: device.joinEui, devNonce: frame.devNonce } : undefined,
  });
}
