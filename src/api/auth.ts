import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import { type Caller, type Scope, hasScope, isScope } from '../commissioning/caller.js';
import { CommissioningError } from '../commissioning/errors.js';
import { problems } from './schemas.js';

/*
 * Authentication and authorisation of the REST API. Every route declares in its config what it needs:
 *   `scope: 'public'`         no credential (the receiving key, the OpenAPI document, the docs);
 *   `scope: 'authenticated'`  any valid API key; the service decides (e.g. an organisation reading itself);
 *   `scope: '<scope>'`        an API key holding that scope (`admin` holds every scope).
 * A route that declares nothing is a programming error, refused when it is added, so no route is open by omission.
 * The same declaration writes the route's `security` into the OpenAPI document, so the document cannot disagree.
 */

export type RouteScope = Scope | 'public' | 'authenticated';

declare module 'fastify' {
  interface FastifyContextConfig {
    scope?: RouteScope;
  }
  interface FastifyRequest {
    /** Set by the authentication hook on every route that is not public. */
    caller: Caller | null;
  }
}

/** Name of the security scheme in the OpenAPI document. */
export const BEARER = 'apiKey';

/** Routes added by @fastify/swagger-ui, which cannot declare a scope themselves: the browsable docs are public. */
const DOCS = '/api/v1/docs';

export interface AuthOptions {
  /** Resolves a presented Bearer token to a Caller, or throws CommissioningError UNAUTHENTICATED. */
  readonly authenticate: (token: string, req: FastifyRequest) => Promise<Caller>;
}

export function addAuthentication(app: FastifyInstance, o: AuthOptions): void {
  app.decorateRequest('caller', null);
  app.addHook('onRoute', declareScope);
  app.addHook('onRequest', async (req) => {
    if (req.is404) return; // an unknown path is the same 404 for everyone
    const scope = req.routeOptions.config.scope;
    if (scope === 'public') return;
    if (scope === undefined) throw new Error(`route ${req.method} ${req.routeOptions.url} has no scope`); // unreachable: declareScope
    const token = bearerToken(req.headers.authorization);
    if (token === undefined) throw new CommissioningError('UNAUTHENTICATED', 'a valid API key is required (Authorization: Bearer jk_…)');
    const caller = await o.authenticate(token, req);
    req.caller = caller;
    if (scope !== 'authenticated' && !hasScope(caller, scope)) throw new CommissioningError('FORBIDDEN', `this API key lacks the scope ${scope}`);
  });
}

/** The caller of an authenticated route (the hook ran before the handler). */
export function callerOf(req: FastifyRequest): Caller {
  if (req.caller === null) throw new Error(`route ${req.method} ${req.routeOptions.url} reads the caller but is public`);
  return req.caller;
}

function declareScope(route: RouteOptions): void {
  const config = (route.config ?? {}) as { scope?: RouteScope };
  if (config.scope === undefined && route.url.startsWith(DOCS)) {
    route.config = { ...config, scope: 'public' };
    return;
  }
  const scope = config.scope;
  if (scope === undefined || !(scope === 'public' || scope === 'authenticated' || isScope(scope))) {
    throw new Error(`API route ${String(route.method)} ${route.url} must declare config.scope ('public', 'authenticated' or a scope), got ${JSON.stringify(scope)}`);
  }
  const schema = (route.schema ?? {}) as Record<string, unknown>;
  if (schema['hide'] === true) return;
  const takesInput = schema['body'] !== undefined || schema['querystring'] !== undefined || schema['params'] !== undefined;
  const refusals = [...(takesInput ? [400] : []), ...(scope === 'public' ? [] : [401]), ...(scope === 'public' || scope === 'authenticated' ? [] : [403])];
  route.schema = {
    ...schema,
    // OpenAPI: every operation says how it authenticates; [] = none.
    security: scope === 'public' ? [] : [{ [BEARER]: [] }],
    response: { ...problems(...refusals), ...((schema['response'] as Record<string, unknown> | undefined) ?? {}) },
  } as RouteOptions['schema'];
}

/** RFC 6750 §2.1: `Authorization: Bearer <token>`. */
function bearerToken(header: string | undefined): string | undefined {
  const m = header === undefined ? null : /^Bearer +([\x21-\x7e]+) *$/i.exec(header);
  return m?.[1];
}
