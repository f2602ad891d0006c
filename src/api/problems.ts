import type { FastifyReply } from 'fastify';
import { CommissioningError, type CommissioningErrorCode } from '../commissioning/errors.js';
import { CustodyError } from '../custody/errors.js';
import { ProvisioningError, type ProvisioningErrorCode } from '../provisioning/errors.js';
import { StorageError } from '../storage/errors.js';

/*
 * The one place where the REST API chooses HTTP statuses: every error becomes an RFC 9457 problem+json body with a
 * stable `code`. Messages never contain key material (the error classes guarantee it), so they are shown as they are.
 */

const provisioningStatus: Record<ProvisioningErrorCode, number> = {
  INVALID_INPUT: 400,
  BATCH_INVALID: 400,
  BATCH_TOO_LARGE: 413,
  BATCH_ALG_UNSUPPORTED: 400,
  OUTPUT_EXISTS: 409,
  BATCH_SIGNATURE_INVALID: 400,
  MAKER_UNKNOWN: 403,
  MAKER_MISMATCH: 403,
  BATCH_WRONG_RECIPIENT: 422,
  UNWRAP_FAILED: 422,
  DERIVATION_KEY_UNKNOWN: 422,
  BATCH_CONFLICT: 409,
  BATCH_ALREADY_IMPORTED: 409,
  BATCH_ID_REUSED: 409,
  DEVICE_EXISTS: 409,
  KEK_EXISTS: 409,
  KEK_NOT_FOUND: 422,
  CLEAR_KEY_REFUSED: 422,
  KEK_NOT_TRUSTABLE: 422,
};

export const commissioningStatus: Record<CommissioningErrorCode, number> = {
  INVALID_INPUT: 400,
  PEER_EXISTS: 409,
  KEK_NOT_FOUND: 422,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  CLAIM_FAILED: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  RATE_LIMITED: 429,
};

export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly [extension: string]: unknown;
}

export function problem(code: string, status: number, detail: string, extensions: Readonly<Record<string, unknown>> = {}): Problem {
  return { type: `urn:joinkeep:problem:${code}`, title: code, status, code, detail, ...extensions };
}

export function problemFor(error: unknown): Problem {
  if (error instanceof CommissioningError) return problem(error.code, commissioningStatus[error.code] ?? 400, error.message);
  if (error instanceof ProvisioningError) return problem(error.code, provisioningStatus[error.code] ?? 400, error.message, error.details ?? {});
  if (error instanceof CustodyError) {
    const status = error.code === 'OVERLOADED' ? 503 : error.code === 'TOKEN_UNAVAILABLE' || error.code === 'TOKEN_ERROR' ? 503 : 422;
    return problem(error.code, status, error.message);
  }
  if (error instanceof StorageError) {
    const status = error.code === 'UNAVAILABLE' || error.code === 'SCHEMA_TOO_NEW' ? 503 : 409;
    return problem(error.code, status, error.message);
  }
  const fastify = error as { code?: unknown; statusCode?: unknown; validation?: unknown; message?: unknown };
  // Request validation (the route's TypeBox schema): the message names the field, e.g. "body/name must NOT have fewer than 1 characters".
  if (fastify.validation !== undefined) return problem('INVALID_INPUT', 400, String(fastify.message));
  if (fastify.statusCode === 413) return problem('TOO_LARGE', 413, 'the body is larger than this route accepts (api.bodyLimit for batches)');
  if (fastify.statusCode === 415) return problem('UNSUPPORTED_MEDIA_TYPE', 415, 'send the body as application/json');
  // Malformed JSON and other refusals of the request itself, before any route code ran.
  if (fastify.statusCode === 400 && typeof fastify.code === 'string' && fastify.code.startsWith('FST_')) return problem('INVALID_INPUT', 400, String(fastify.message));
  return problem('INTERNAL', 500, 'internal error; see the server log');
}

/** Headers a problem carries besides its body (RFC 9110 §11.6.1 WWW-Authenticate, §10.2.3 Retry-After). */
export function problemHeaders(error: unknown, p: Problem): Record<string, string> {
  if (p.status === 401) return { 'www-authenticate': 'Bearer realm="joinkeep"' };
  if (p.status === 429 && error instanceof CommissioningError) return { 'retry-after': String(Math.max(1, Math.ceil(error.retryAfterS ?? 60))) };
  return {};
}

export function sendProblem(reply: FastifyReply, p: Problem, headers: Readonly<Record<string, string>> = {}): FastifyReply {
  return reply.code(p.status).headers(headers).type('application/problem+json').send(p);
}

export function sendError(reply: FastifyReply, error: unknown): FastifyReply {
  const p = problemFor(error);
  return sendProblem(reply, p, problemHeaders(error, p));
}
