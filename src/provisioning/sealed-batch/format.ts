import type { TSchema } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler, type ValueError, ValueErrorType } from '@sinclair/typebox/compiler';
import { ProvisioningError } from '../errors.js';
import {
  BATCH_KINDS,
  type BatchKind,
  type Envelope,
  EnvelopeSchema,
  type ProtectedHeader,
  ProtectedHeaderSchema,
  SEALED_BATCH_VERSION,
  SIGNATURE_ALGORITHMS,
  type SealedBatchPayload,
  payloadSchemas,
} from './schema.js';

export * from './schema.js';

/*
 * Reading a sealed batch file (docs/specs/sealed-batch.md): the JWS flattened envelope, its protected header and
 * the v1 payload, each checked against its schema, then the rules a schema cannot express. No signature check
 * here (verify.ts). Every refusal is BATCH_INVALID (or BATCH_TOO_LARGE / BATCH_ALG_UNSUPPORTED) and names the
 * JSON path of the first problem, so a maker can fix their tool.
 */

/** A 1,000,000-device batch is about 450 MB; the importer passes its own, usually lower, limit. */
export const DEFAULT_MAX_BATCH_BYTES = 512 * 1024 * 1024;

export interface ParseOptions {
  /** Largest file accepted, in bytes (default DEFAULT_MAX_BATCH_BYTES). */
  readonly maxBytes?: number;
}

export interface ParsedEnvelope {
  readonly envelope: Envelope;
  readonly header: ProtectedHeader;
}

export interface ParsedSealedBatch extends ParsedEnvelope {
  readonly payload: SealedBatchPayload;
  /** The JWS signing input, ASCII(protected ‖ "." ‖ payload) (RFC 7515 §5.1), what the signature covers. */
  readonly signingInput: Buffer;
}

const envelopeCheck = TypeCompiler.Compile(EnvelopeSchema);
const headerCheck = TypeCompiler.Compile(ProtectedHeaderSchema);
const payloadChecks = Object.fromEntries(Object.entries(payloadSchemas).map(([kind, schema]) => [kind, TypeCompiler.Compile(schema as TSchema)])) as Record<BatchKind, TypeCheck<TSchema>>;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses the whole file: envelope, header, payload. */
export function parseSealedBatch(bytes: Uint8Array, options: ParseOptions = {}): ParsedSealedBatch {
  const { envelope, header } = parseEnvelope(bytes, options);
  const payload = parsePayload(Buffer.from(envelope.payload, 'base64url'));
  return { envelope, header, payload, signingInput: Buffer.from(`${envelope.protected}.${envelope.payload}`, 'ascii') };
}

/** The envelope and its protected header only; the payload stays encoded until its signature is checked. */
export function parseEnvelope(bytes: Uint8Array, options: ParseOptions = {}): ParsedEnvelope {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BATCH_BYTES;
  if (bytes.length > maxBytes) throw new ProvisioningError('BATCH_TOO_LARGE', `the batch file has ${bytes.length} bytes, more than the limit of ${maxBytes}`);
  const envelope = validated(envelopeCheck, parseJson(bytes, 'the batch file'), 'the JWS envelope');
  const header = parseJson(Buffer.from(envelope.protected, 'base64url'), 'the protected header');
  if (!isObject(header)) throw invalid('the protected header', '$', 'must be a JSON object');
  const alg = header['alg'];
  // Refused by name before anything else, so "none" and HMAC never reach key lookup.
  if (typeof alg === 'string' && !SIGNATURE_ALGORITHMS.includes(alg as never)) {
    throw new ProvisioningError('BATCH_ALG_UNSUPPORTED', `the batch is signed with ${JSON.stringify(alg)}; Joinkeep accepts only ${SIGNATURE_ALGORITHMS.join(' and ')}`);
  }
  return { envelope, header: validated(headerCheck, header, 'the protected header') as ProtectedHeader };
}

/** The decoded JWS payload (UTF-8 JSON), checked against the v1 schema and rules. */
export function parsePayload(bytes: Uint8Array): SealedBatchPayload {
  return checkPayload(parseJson(bytes, 'the payload'));
}

/** Checks an in-memory payload against the v1 schema and rules (the sealer runs it before signing). */
export function checkPayload(value: unknown): SealedBatchPayload {
  if (!isObject(value)) throw invalid('the payload', '$', 'must be a JSON object');
  if (value['version'] !== SEALED_BATCH_VERSION) throw invalid('the payload', '$.version', `is ${JSON.stringify(value['version'])}; this Joinkeep reads version ${SEALED_BATCH_VERSION}`);
  const kind = value['kind'];
  if (!BATCH_KINDS.includes(kind as never)) throw invalid('the payload', '$.kind', `is ${JSON.stringify(kind)}; expected one of ${BATCH_KINDS.join(', ')}`);
  const payload = validated(payloadChecks[kind as BatchKind], value, 'the payload') as SealedBatchPayload;
  checkRules(payload);
  return payload;
}

/** What the schema cannot say (spec: "Validation rules"). */
function checkRules(p: SealedBatchPayload): void {
  if (Number.isNaN(Date.parse(p.createdAt))) throw invalid('the payload', '$.createdAt', `${p.createdAt} is not a real date`);
  if (p.deviceCount !== p.devices.length) throw invalid('the payload', '$.deviceCount', `is ${p.deviceCount} but the batch lists ${p.devices.length} devices`);
  const seen = new Map<string, number>();
  p.devices.forEach((d, i) => {
    const first = seen.get(d.devEui);
    if (first !== undefined) throw invalid('the payload', `$.devices[${i}].devEui`, `${d.devEui} is listed twice (also at $.devices[${first}])`);
    seen.set(d.devEui, i);
  });
  if (p.kind !== 'device-keys' && p.kind !== 'transfer') return;
  p.devices.forEach((d, i) => {
    // LoRaWAN 1.1 §6.1.1: a 1.1 device has AppKey and NwkKey; a 1.0.x device has the AppKey only.
    if (d.macVersion === '1.1' && d.nwkKey === undefined) throw invalid('the payload', `$.devices[${i}].nwkKey`, `is missing: ${d.devEui} is a LoRaWAN 1.1 device`);
    if (d.macVersion !== '1.1' && d.nwkKey !== undefined) throw invalid('the payload', `$.devices[${i}].nwkKey`, `must be absent: ${d.devEui} is a LoRaWAN ${d.macVersion} device (AppKey only)`);
  });
}

function parseJson(bytes: Uint8Array, what: string): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new ProvisioningError('BATCH_INVALID', `${what} is not UTF-8 text`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new ProvisioningError('BATCH_INVALID', `${what} is not valid JSON (truncated or corrupted?): ${(error as Error).message}`);
  }
}

function validated<T extends TSchema>(check: TypeCheck<T>, value: unknown, what: string): T['static'] {
  if (check.Check(value)) return value;
  const first = check.Errors(value).First();
  if (first === undefined) throw invalid(what, '$', 'does not match the schema');
  throw invalid(what, jsonPath(first.path), problemOf(first));
}

function problemOf(e: ValueError): string {
  const about = e.schema.description ? ` (${e.schema.description})` : '';
  switch (e.type) {
    case ValueErrorType.ObjectRequiredProperty:
      return `is missing${about}`;
    case ValueErrorType.ObjectAdditionalProperties:
      return 'is not a field of this format version';
    default:
      return `is invalid: ${e.message.charAt(0).toLowerCase()}${e.message.slice(1)}${about}`;
  }
}

/** JSON Pointer (RFC 6901, as TypeBox reports paths) to the JSONPath form people read: $.devices[3].devEui. */
export function jsonPath(pointer: string): string {
  if (pointer === '') return '$';
  return (
    '$' +
    pointer
      .slice(1)
      .split('/')
      .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'))
      .map((t) => (/^\d+$/.test(t) ? `[${t}]` : /^[A-Za-z_$][\w$]*$/.test(t) ? `.${t}` : `[${JSON.stringify(t)}]`))
      .join('')
  );
}

function invalid(what: string, path: string, problem: string): ProvisioningError {
  return new ProvisioningError('BATCH_INVALID', `${what}: ${path} ${problem}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
