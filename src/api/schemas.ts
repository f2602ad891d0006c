import { type Static, type TObject, type TProperties, type TSchema, Type } from '@sinclair/typebox';

/*
 * TypeBox schemas shared by the routes: one source for validation, serialisation and the OpenAPI document. Every
 * object a route answers with is closed (`additionalProperties: false`): the serialiser then writes only the declared
 * fields, so a record that gains a field (a hash, a handle) cannot leak it through a route that forgot to drop it.
 */

/** A closed object: unknown fields are refused in requests and never written in responses. */
export function Closed<P extends TProperties>(properties: P, options: { description?: string; minProperties?: number } = {}): TObject<P> {
  return Type.Object(properties, { ...options, additionalProperties: false });
}

export const DateTime = Type.String({ format: 'date-time' });
export const NullableDateTime = Type.Union([DateTime, Type.Null()]);

/** RFC 9457 problem details, with the extensions our errors carry. */
export const Problem = Closed(
  {
    type: Type.String({ description: '`urn:joinkeep:problem:<code>`' }),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String({ description: 'stable error code (docs/api/rest.md, "Errors")' }),
    detail: Type.String(),
    conflicts: Type.Optional(Type.Array(Closed({ devEui: Type.String(), reason: Type.String() }), { description: 'BATCH_CONFLICT: each DevEUI of the batch already known, and why' })),
  },
  { description: 'RFC 9457 problem details' },
);

/** `?limit=` (1..1000, default 100) and `?after=` (the opaque cursor of the previous page's `next`). */
export const PageQuery = Closed({
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  after: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, description: 'opaque cursor: the `next` of the previous page' })),
});
export type PageQuery = Static<typeof PageQuery>;

/** `{ items, next? }`: `next` is present when there is more, and is passed back as `?after=`. */
export function Page<T extends TSchema>(item: T) {
  return Closed({ items: Type.Array(item), next: Type.Optional(Type.String({ description: 'cursor of the next page; absent on the last' })) });
}

/** Error responses of a route, as problem+json, for the OpenAPI document and the serialiser. */
export function problems(...statuses: number[]): Record<number, { description: string; content: { 'application/problem+json': { schema: typeof Problem } } }> {
  return Object.fromEntries(statuses.map((s) => [s, { description: problemDescriptions[s] ?? 'refused', content: { 'application/problem+json': { schema: Problem } } }]));
}

const problemDescriptions: Record<number, string> = {
  400: 'INVALID_INPUT: the request does not match the schema, or a value is invalid',
  401: 'UNAUTHENTICATED: no API key, or one that is malformed, unknown, revoked or expired',
  403: 'FORBIDDEN: the API key lacks the scope, or the organisation the right',
  404: 'NOT_FOUND: does not exist, or is not visible to the caller',
  409: 'CONFLICT: already exists, or changed meanwhile',
  413: 'TOO_LARGE: the body is larger than accepted',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  422: 'the request is understood but cannot be carried out',
  429: 'RATE_LIMITED: too many failed attempts; see Retry-After',
  503: 'the key store (HSM) or the database cannot serve now; retry later',
};

/** A Date as the API writes it. */
export function iso(d: Date): string;
export function iso(d: Date | null): string | null;
export function iso(d: Date | null): string | null {
  return d === null ? null : d.toISOString();
}
