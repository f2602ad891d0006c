import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { KeyCustody } from '../custody/custody.js';
import { bindDevices, parseBinding, unclaimDevices } from '../commissioning/bindings.js';
import type { Caller } from '../commissioning/caller.js';
import { claimDevice } from '../commissioning/claims.js';
import { type CommissioningStorage, visibleDevice } from '../commissioning/device-access.js';
import { CommissioningError } from '../commissioning/errors.js';
import type { FailureLimiter } from '../commissioning/rate-limit.js';

/*
 * The Things Join Server claim API v2 (spec-notes §8.2), served on the Backend Interfaces listener so that The Things
 * Stack's Device Claiming Server can claim devices here unchanged: TLS with a client certificate, pinned by its SHA-256
 * fingerprint to a claim client (`joinkeep peer add-claim-client`) that belongs to an organisation. Its requests act
 * for that organisation, through the same services as the REST API.
 *
 * Deliberate differences, each documented in docs/commissioning.md:
 * - every failed claim is 403 "claim failed with given owner token", also for a DevEUI that is not provisioned here
 *   (The Things Join Server answers 404): a failed claim must not reveal whether the device exists;
 * - a `kek` in the claim body is refused (400): KEKs reach Joinkeep through `joinkeep kek add`, never in a request.
 */

export interface ClaimApiV2Deps {
  readonly storage: CommissioningStorage;
  readonly custody: KeyCustody;
  readonly limiter: FailureLimiter;
  /** SHA-256 fingerprint (lower-case hex) of the TLS client certificate the request came with, if any. */
  readonly clientCertSha256: (req: FastifyRequest) => string | undefined;
}

const CLAIM_FAILED = 'claim failed with given owner token';

const message = (reply: FastifyReply, status: number, text: string): FastifyReply => reply.code(status).header('content-type', 'application/json').send({ message: text });

export function registerClaimApiV2(app: FastifyInstance, deps: ClaimApiV2Deps): void {
  const callerOf = async (req: FastifyRequest): Promise<Caller | undefined> => {
    const fingerprint = deps.clientCertSha256(req);
    if (fingerprint === undefined) return undefined;
    const peer = await deps.storage.findPeerByClientCertSha256(fingerprint);
    if (peer === undefined || peer.kind !== 'claim') return undefined;
    const organisation = await deps.storage.peerOrganisation(peer.id);
    if (organisation == null) return undefined;
    return { organisation, scopes: new Set(['devices:claim', 'devices:bind', 'devices:read']), actor: peer.id, rateKey: peer.id };
  };
  const owner = { storage: deps.storage, custody: deps.custody };

  const route = (handler: (caller: Caller, req: FastifyRequest<{ Params: Record<string, string> }>, reply: FastifyReply) => Promise<FastifyReply>) =>
    async (req: FastifyRequest<{ Params: Record<string, string> }>, reply: FastifyReply): Promise<FastifyReply> => {
      const caller = await callerOf(req);
      if (caller === undefined) return message(reply, 401, 'unauthenticated: present the client certificate of a registered claim client');
      try {
        return await handler(caller, req, reply);
      } catch (error) {
        if (!(error instanceof CommissioningError)) throw error;
        if (error.code === 'RATE_LIMITED') return message(reply.header('retry-after', String(error.retryAfterS ?? 60)), 429, error.message);
        if (error.code === 'NOT_FOUND') return message(reply, 404, error.message);
        if (error.code === 'FORBIDDEN') return message(reply, 403, error.message);
        return message(reply, 400, error.message);
      }
    };

  app.register(async (v2) => {
    v2.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
      try {
        done(null, body === '' ? undefined : JSON.parse(body as string));
      } catch {
        done(Object.assign(new Error('the body is not JSON'), { statusCode: 400 }), undefined);
      }
    });
    v2.setErrorHandler((error, req, reply) => {
      const status = (error as { statusCode?: number }).statusCode ?? 500;
      // This handler replaces Fastify's, which logs: an internal error must still reach the log, not only "internal error".
      if (status >= 500) req.log.error({ err: error, url: req.url, method: req.method }, 'claim API v2: internal error');
      return message(reply, status, status < 500 ? (error as Error).message : 'internal error');
    });

    v2.put('/api/v2/devices/:devEui/claim', route(async (caller, req, reply) => {
      const body = req.body as Record<string, unknown> | undefined;
      if (typeof body !== 'object' || body === null) return message(reply, 400, 'the body must be a JSON object');
      const { ownerToken, homeNetID, homeNSID, asID, lock, regenerateOwnerToken, kek } = body;
      if (kek !== undefined) return message(reply, 400, 'a KEK is not accepted in a claim: the operator adds KEKs wrapped (joinkeep kek add), and the binding names them');
      if (typeof ownerToken !== 'string' || typeof homeNetID !== 'string') return message(reply, 400, 'ownerToken and homeNetID are required strings');
      if ((asID !== undefined && typeof asID !== 'string') || (homeNSID !== undefined && homeNSID !== null && typeof homeNSID !== 'string')) return message(reply, 400, 'asID and homeNSID are strings');
      if ((lock !== undefined && typeof lock !== 'boolean') || (regenerateOwnerToken !== undefined && typeof regenerateOwnerToken !== 'boolean')) return message(reply, 400, 'lock and regenerateOwnerToken are booleans');
      const devEui = req.params['devEui']!;
      const binding = { homeNetId: homeNetID, homeNsId: (homeNSID as string | null | undefined) ?? null, asId: (asID as string | undefined) ?? null };
      await parseBinding(owner, binding); // a bad binding changes nothing, not even the claim
      let claimed;
      try {
        claimed = await claimDevice({ storage: deps.storage, limiter: deps.limiter }, caller, { devEui, claimCode: ownerToken, lock: lock ?? false, regenerate: regenerateOwnerToken ?? false });
      } catch (error) {
        // A token that is not even a claim code's shape is a failed claim like any other.
        if (error instanceof CommissioningError && (error.code === 'CLAIM_FAILED' || (error.code === 'INVALID_INPUT' && !/DevEUI/i.test(error.message)))) {
          if (error.code === 'INVALID_INPUT') deps.limiter.fail(caller.rateKey);
          return message(reply, 403, CLAIM_FAILED);
        }
        throw error;
      }
      await bindDevices(owner, caller, [claimed.devEui], binding);
      return reply.code(201).send(claimed.claimCode === undefined ? {} : { ownerToken: claimed.claimCode.replaceAll('-', '') });
    }));

    v2.get('/api/v2/devices/:devEui/claim', route(async (caller, req, reply) => {
      const found = await visibleDevice(deps.storage, caller, req.params['devEui']!, 'devices:read').catch((error: unknown) => {
        if (error instanceof CommissioningError && error.code === 'NOT_FOUND') return undefined;
        throw error;
      });
      if (found === undefined || !found.bound || found.commissioning.owner !== caller.organisation) return message(reply, 404, 'device not claimed');
      return reply.send({ homeNetID: found.device.homeNetId, ...(found.device.homeNsId === null ? {} : { homeNSID: found.device.homeNsId }), locked: found.commissioning.claimLocked });
    }));

    v2.delete('/api/v2/devices/:devEui/claim', route(async (caller, req, reply) => {
      try {
        await unclaimDevices(owner, caller, [req.params['devEui']!]);
      } catch (error) {
        if (error instanceof CommissioningError && error.code === 'NOT_FOUND') return message(reply, 404, 'device not claimed');
        throw error;
      }
      return reply.code(204).send();
    }));

    v2.delete('/api/v2/devices/:devEuis/claims', route(async (caller, req, reply) => {
      const devEuis = req.params['devEuis']!.split(',').filter((s) => s !== '');
      if (devEuis.length === 0) return message(reply, 400, 'no devices in request');
      const errors: Record<string, { message: string }> = {};
      for (const devEui of devEuis) {
        try {
          await unclaimDevices(owner, caller, [devEui]);
        } catch (error) {
          if (!(error instanceof CommissioningError)) throw error;
          errors[devEui] = { message: error.code === 'NOT_FOUND' ? 'device not claimed' : error.message };
        }
      }
      if (Object.keys(errors).length > 0) return reply.code(400).send(errors);
      return reply.code(204).send();
    }));
  });
}
