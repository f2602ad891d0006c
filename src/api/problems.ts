import type { FastifyReply } from 'fastify';
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

export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly [extension: string]: unknown;
}

export function problemFor(error: unknown): Problem {
  if (error instanceof ProvisioningError) {
    return { type: `urn:joinkeep:problem:${error.code}`, title: error.code, status: provisioningStatus[error.code] ?? 400, code: error.code, detail: error.message, ...(error.details ?? {}) };
  }
  if (error instanceof CustodyError) {
    const status = error.code === 'OVERLOADED' ? 503 : error.code === 'TOKEN_UNAVAILABLE' || error.code === 'TOKEN_ERROR' ? 503 : 422;
    return { type: `urn:joinkeep:problem:${error.code}`, title: error.code, status, code: error.code, detail: error.message };
  }
  if (error instanceof StorageError) {
    const status = error.code === 'UNAVAILABLE' || error.code === 'SCHEMA_TOO_NEW' ? 503 : 409;
    return { type: `urn:joinkeep:problem:${error.code}`, title: error.code, status, code: error.code, detail: error.message };
  }
  return { type: 'urn:joinkeep:problem:INTERNAL', title: 'INTERNAL', status: 500, code: 'INTERNAL', detail: 'internal error; see the server log' };
}

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  return reply.code(problem.status).type('application/problem+json').send(problem);
}
