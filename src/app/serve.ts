import { readFile } from 'node:fs/promises';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { defaultAdmission } from '../backend/admission.js';
import { type AdminSource, addAdminRoutes, clientCertSha256Of, createBackendServer, localAdminSource } from '../backend/server.js';
import { registerClaimApiV2 } from '../api/claim-v2.js';
import { FailureLimiter } from '../commissioning/rate-limit.js';
import { type Logger, createLogger } from '../observability/logger.js';
import { registerCustodyMetrics } from '../observability/custody-metrics.js';
import { registerStorageMetrics } from '../observability/storage-metrics.js';
import { createMetrics } from '../observability/metrics.js';
import { createApiServer } from '../api/server.js';
import { DEFAULT_API_BODY_LIMIT, parseListen, resolveIn } from './config.js';
import { AppError } from './errors.js';
import { type Joinkeep, openJoinkeep } from './joinkeep.js';

/** TEST ONLY (docs/operations.md, "Test-only fault injection"): n > 0 makes `serve` SIGKILL itself before its n-th activation answer. */
export const TEST_KILL_BEFORE_ANSWER_ENV = 'JOINKEEP_TEST_KILL_BEFORE_ANSWER';

export interface Running {
  readonly joinkeep: Joinkeep;
  /** Bound address of the Backend Interfaces listener, e.g. http://127.0.0.1:8090. */
  readonly url: string;
  readonly adminUrl?: string | undefined;
  /** Bound address of the REST API listener, when one is configured. */
  readonly apiUrl?: string | undefined;
  /** Each HSM pool member's state (undefined for the software keystore). */
  readonly custodyHealth?: (() => readonly { readonly name: string; readonly state: string }[]) | undefined;
  stop(): Promise<void>;
}

export interface ServeOptions {
  readonly listen?: string | undefined;
  readonly adminListen?: string | undefined;
  /** REST API listener (/api/v1); overrides joinkeep.json's api.listen. */
  readonly apiListen?: string | undefined;
  readonly logger?: Logger;
  /** Open the admin listener when one is configured (default true; serve --processes: the primary opens it). */
  readonly adminListener?: boolean;
  /** Overrides where /metrics reads from (serve --processes: the sum of every worker's registry). */
  readonly admin?: AdminSource;
  /** Told this process's metrics registry once it exists. */
  readonly onMetrics?: (registry: Registry) => void;
}

/** Opens a data directory and serves the Backend Interfaces (and /metrics, /healthz) until stopped. */
export async function serve(dataDir: string, options: ServeOptions = {}): Promise<Running> {
  const logger = options.logger ?? createLogger();
  const testOnlyKillBeforeAnswer = testOnlyKillBeforeAnswerOf(process.env, logger);
  const joinkeep = await openJoinkeep(dataDir, { logger });
  const servers: FastifyInstance[] = [];
  try {
    await joinkeep.storage.prepareForJoins();
    if (joinkeep.custody.kind === 'pkcs11') {
      // The server holds the user's login for its whole life: no Security Officer login may happen in this process
      // (it would fail, or log the user out of every session). Trusted KEKs are made by `joinkeep kek add` only.
      const { refuseSecurityOfficerLogin } = await import('../custody/pkcs11/index.js');
      refuseSecurityOfficerLogin('`joinkeep serve` runs in this process');
    }
    const { config } = joinkeep;
    const metrics = createMetrics();
    const { custody } = joinkeep;
    const custodyStatus = custody.status?.bind(custody);
    const custodyHealth = custodyStatus && (() => custodyStatus().members);
    registerCustodyMetrics(metrics.registry, custody);
    registerStorageMetrics(metrics.registry, joinkeep.storage);
    options.onMetrics?.(metrics.registry);
    const tls = config.backend.tls && {
      key: await readFile(resolveIn(dataDir, config.backend.tls.keyFile)),
      cert: await readFile(resolveIn(dataDir, config.backend.tls.certFile)),
      ca: config.backend.tls.clientCaFile ? await readFile(resolveIn(dataDir, config.backend.tls.clientCaFile)) : undefined,
    };
    const adminListen = options.adminListen ?? config.admin?.listen;
    const backend = createBackendServer({
      storage: joinkeep.storage,
      joins: joinkeep.joins,
      logger,
      metrics,
      paths: config.backend.paths,
      bodyLimit: config.backend.bodyLimit,
      tls,
      adminRoutes: adminListen === undefined,
      custodyHealth,
      admin: options.admin,
      admission: config.backend.admission === false ? false : { ...defaultAdmission, ...config.backend.admission },
      testOnlyKillBeforeAnswer,
    });
    // The Things Join Server claim API v2 for claim clients (client certificates), beside the Backend Interfaces.
    const claimLimiter = new FailureLimiter();
    registerClaimApiV2(backend, { storage: joinkeep.storage, custody, limiter: claimLimiter, clientCertSha256: (req) => clientCertSha256Of(req.raw.socket) });
    servers.push(backend);
    const url = await backend.listen(parseListen(options.listen ?? config.backend.listen, '--listen'));
    let adminUrl: string | undefined;
    if (adminListen !== undefined && (options.adminListener ?? true)) {
      const admin = Fastify() as unknown as FastifyInstance;
      addAdminRoutes(admin, localAdminSource(metrics, custodyHealth));
      servers.push(admin);
      adminUrl = await admin.listen(parseListen(adminListen, '--admin-listen'));
    }
    let apiUrl: string | undefined;
    const apiListen = options.apiListen ?? config.api?.listen;
    if (apiListen !== undefined) {
      const api = createApiServer({ storage: joinkeep.storage, custody, logger, claimLimiter, batchBodyLimit: config.api?.bodyLimit ?? DEFAULT_API_BODY_LIMIT });
      servers.push(api);
      apiUrl = await api.listen(parseListen(apiListen, '--api-listen'));
    }
    logger.info({ url, adminUrl, apiUrl, storage: config.storage.kind, custody: joinkeep.custody.kind }, 'Joinkeep is serving the Backend Interfaces');
    return {
      joinkeep,
      url,
      adminUrl,
      apiUrl,
      custodyHealth,
      async stop() {
        for (const s of servers) await s.close();
        await joinkeep.close();
      },
    };
  } catch (error) {
    for (const s of servers) await s.close().catch(() => undefined);
    await joinkeep.close();
    throw error;
  }
}

/** Read once at start; unset or empty: disarmed, and the answer path does not even count. */
function testOnlyKillBeforeAnswerOf(env: NodeJS.ProcessEnv, logger: Logger): number | undefined {
  const text = env[TEST_KILL_BEFORE_ANSWER_ENV];
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new AppError('CONFIG_INVALID', `${TEST_KILL_BEFORE_ANSWER_ENV} (test only) must be a positive integer, got ${JSON.stringify(text)}`);
  logger.warn({ n }, `TEST ONLY: ${TEST_KILL_BEFORE_ANSWER_ENV} is set: this process SIGKILLs itself right before it answers successful JoinReq/RejoinReq number ${n}. Never set it in production.`);
  return n;
}
