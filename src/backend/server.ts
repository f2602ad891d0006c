import type { TLSSocket } from 'node:tls';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { JoinService } from '../join/service.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Storage } from '../storage/storage.js';
import { type Credentials } from './authenticate.js';
import { Admission, type AdmissionSettings, defaultAdmission } from './admission.js';
import { type Outcome, dispatch } from './dispatch.js';
import { answerTypeOf } from '../protocol/index.js';

export interface BackendServerOptions {
  readonly storage: Storage;
  readonly joins: JoinService;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Paths that accept Backend Interfaces POSTs; "/" by default. */
  readonly paths?: readonly string[];
  /** Largest request body, bytes (The Things Stack uses 32 kB; a JoinReq is under 1 kB). */
  readonly bodyLimit?: number;
  /** TLS, optionally asking peers for client certificates (peers are pinned by certificate fingerprint). */
  readonly tls?: { readonly key: Buffer; readonly cert: Buffer; readonly ca?: Buffer | undefined } | undefined;
  /** Serve GET /metrics and /healthz on this listener too (when there is no separate admin listener). */
  readonly adminRoutes?: boolean;
  readonly custodyHealth?: CustodyHealth | undefined;
  /** Where /metrics reads from when it is not this process's registry alone (serve --processes: every worker's). */
  readonly admin?: AdminSource | undefined;
  /** Admission control of activation requests (src/backend/admission.ts); false: none. Default: defaultAdmission. */
  readonly admission?: AdmissionSettings | false | undefined;
  /**
   * TEST ONLY, never a feature (docs/operations.md, "Test-only fault injection"): SIGKILL this process right before
   * it writes its n-th successful JoinAns/RejoinAns, after the JoinNonce was committed. Undefined: no check at all.
   */
  readonly testOnlyKillBeforeAnswer?: number | undefined;
}

/** The Backend Interfaces HTTP server (TS002 §20: HTTP/1.1 POST with a JSON body, answered synchronously). */
export function createBackendServer(o: BackendServerOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: o.logger as FastifyBaseLogger,
    // One summary line per request is logged by `record`; Fastify's own per-request lines are off.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: o.bodyLimit ?? 64 * 1024,
    ...(o.tls ? { https: { key: o.tls.key, cert: o.tls.cert, ca: o.tls.ca, requestCert: o.tls.ca !== undefined, rejectUnauthorized: false } } : {}),
  }) as unknown as FastifyInstance;

  // Interop (spec-notes §4.5): peers send application/json with or without charset, and some send no
  // Content-Type at all; the body is parsed by dispatch so that malformed JSON still gets a TS002 answer.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));

  // The per-request summary line carries only the fields `record` picks (identifiers, codes, a duration), never a
  // request body or key: it skips the redaction pass, which cost more than the rest of the line (about 40 µs of
  // ~55 µs per line measured here). Error lines, which carry causes, keep the redacting logger.
  const requestLog = o.logger.child({}, { redact: [] });

  const admissionSettings = o.admission ?? defaultAdmission;
  const admission = admissionSettings === false ? undefined : new Admission(admissionSettings, (reason) => o.metrics.backendShed.inc({ reason }));
  const deps = { storage: o.storage, joins: o.joins, admission };
  const testOnlyKillPoint = o.testOnlyKillBeforeAnswer === undefined ? undefined : testOnlyPowerCut(o.testOnlyKillBeforeAnswer);

  const handle = async (raw: unknown, credentials: Credentials): Promise<Outcome> => {
    const started = process.hrtime.bigint();
    const outcome = await dispatch(deps, typeof raw === 'string' ? raw : '', credentials);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const messageType = knownMessageType(outcome.messageType);
    o.metrics.backendRequests.inc({ message_type: messageType, result: outcome.resultCode, mac_version: outcome.macVersion });
    o.metrics.backendDuration.observe({ message_type: messageType }, seconds);
    await record(o, requestLog, outcome, seconds);
    return outcome;
  };

  for (const path of o.paths ?? ['/']) {
    // Fastify would make a child logger per request (a few µs each) for request.log, which these routes never use:
    // `record` writes the request's one line. Fastify's own lines about such a request carry no request id.
    app.post(path, { childLoggerFactory: (logger) => logger }, async (req, reply) => {
      const outcome = await handle(req.body, credentialsOf(req.headers.authorization, req.raw.socket));
      testOnlyKillPoint?.(outcome);
      // Always 200 with a Result: TTS and ChirpStack treat any other status as a transport error (spec-notes §2.1).
      return reply.code(200).header('content-type', 'application/json').send(outcome.answer);
    });
  }

  if (o.adminRoutes ?? true) {
    addAdminRoutes(app, { ...localAdminSource(o.metrics), ...o.admin, custody: o.admin?.custody ?? o.custodyHealth });
  }
  return app;
}

/**
 * TEST ONLY: a power cut between COMMIT and answer (test/e2e/power-cut.test.ts). The join engine has committed the
 * nonce state of this Success; the process dies before a byte of the answer is written, so the test can check that
 * what was committed stays committed and that nothing committed is ever issued again.
 */
function testOnlyPowerCut(n: number): (outcome: Outcome) => void {
  let successes = 0;
  return (outcome) => {
    if (outcome.resultCode !== 'Success' || (outcome.messageType !== 'JoinReq' && outcome.messageType !== 'RejoinReq')) return;
    if (++successes >= n) process.kill(process.pid, 'SIGKILL');
  };
}

/** What /healthz reports of custody: each HSM pool member's state (none for the software keystore). */
export type CustodyHealth = () => readonly CustodyMemberHealth[] | Promise<readonly CustodyMemberHealth[]>;
export interface CustodyMemberHealth {
  readonly name: string;
  readonly state: string;
}

/** What the admin routes serve: the Prometheus text and custody health, of one process or of all workers. */
export interface AdminSource {
  readonly contentType: string;
  metrics(): Promise<string>;
  readonly custody?: CustodyHealth | undefined;
}

export function localAdminSource(metrics: Metrics, custody?: CustodyHealth): AdminSource {
  return { contentType: metrics.registry.contentType, metrics: () => metrics.registry.metrics(), custody };
}

export function addAdminRoutes(app: FastifyInstance, source: AdminSource): void {
  app.get('/metrics', async (_req, reply) => reply.header('content-type', source.contentType).send(await source.metrics()));
  app.get('/healthz', async (_req, reply) => {
    const members = (await source.custody?.()) ?? [];
    if (members.length === 0) return { status: 'ok' };
    const up = members.filter((m) => m.state === 'up').length;
    // Degraded still serves every join; only a pool with no member in service makes this instance unhealthy.
    const status = up === members.length ? 'ok' : up > 0 ? 'degraded' : 'unavailable';
    return reply.code(up > 0 ? 200 : 503).send({ status, custody: members.map((m) => ({ member: m.name, state: m.state })) });
  });
}

/** MessageType comes from the request: only the types we serve become metric labels or audit actions. */
function knownMessageType(messageType: string): string {
  return messageType in answerTypeOf ? messageType : 'other';
}

function credentialsOf(authorization: string | undefined, socket: unknown): Credentials {
  const clientCertSha256 = clientCertSha256Of(socket);
  return clientCertSha256 === undefined ? { authorization } : { authorization, clientCertSha256 };
}

/** SHA-256 fingerprint (lower-case hex) of the TLS client certificate, when one was presented and chains to the client CA. */
export function clientCertSha256Of(socket: unknown): string | undefined {
  const tls = socket as Partial<TLSSocket>;
  if (typeof tls.getPeerCertificate !== 'function' || tls.authorized !== true) return undefined;
  const cert = tls.getPeerCertificate();
  return cert?.fingerprint256 ? cert.fingerprint256.replaceAll(':', '').toLowerCase() : undefined;
}

async function record(o: BackendServerOptions, requestLog: Logger, outcome: Outcome, seconds: number): Promise<void> {
  // Filled in place: a spread copy of it, as a refusal's line once made, costs several µs per request in a storm.
  const fields: Record<string, unknown> = {
    messageType: outcome.messageType,
    result: outcome.resultCode,
    devEui: outcome.devEui,
    sender: outcome.sender,
    macVersion: outcome.macVersion || undefined,
    ms: Math.round(seconds * 1e5) / 100,
  };
  if (outcome.internalError !== undefined) {
    fields['err'] = outcome.internalError;
    o.logger.error(fields, 'backend request failed');
  } else if (outcome.resultCode === 'Success') {
    requestLog.info(fields, 'backend request answered');
  } else {
    fields['description'] = outcome.description;
    requestLog.warn(fields, 'backend request refused');
  }
  // Successes are audited by the join engine in the same transaction as their state change; refusals of
  // authenticated peers are audited here. Unauthenticated noise goes to logs and metrics only.
  if (outcome.resultCode !== 'Success' && outcome.sender !== undefined) {
    await o.storage
      .appendAudit({
        at: new Date(),
        actor: outcome.sender,
        action: `${knownMessageType(outcome.messageType)}.refuse`,
        subject: outcome.devEui ? `device/${outcome.devEui}` : 'backend',
        outcome: outcome.resultCode,
        details: { description: outcome.description },
      })
      .catch((err: unknown) => o.logger.error({ err }, 'could not append audit event'));
  }
}
