import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { macVersions } from '../../protocol/index.js';

/*
 * Sealed batch v1 (docs/specs/sealed-batch.md): TypeBox schemas, the single source of the TypeScript types, of
 * the validation in format.ts and of docs/specs/sealed-batch.schema.json. Rules a JSON Schema cannot say
 * (deviceCount, unique DevEUIs, NwkKey by LoRaWAN version) are checked in format.ts and listed in the spec.
 */

export const SEALED_BATCH_VERSION = 1;
export const SEALED_BATCH_TYP = 'joinkeep-sealed-batch+json';
export const SIGNATURE_ALGORITHMS = ['ES256', 'EdDSA'] as const;
export type SignatureAlgorithm = (typeof SIGNATURE_ALGORITHMS)[number];
export const BATCH_KINDS = ['device-keys', 'derived', 'derivation-master', 'transfer'] as const;
export type BatchKind = (typeof BATCH_KINDS)[number];
export const MAX_DEVICES = 1_000_000;

const B64URL = '[A-Za-z0-9_-]';

const Eui = Type.String({ pattern: '^[0-9A-F]{16}$', description: 'EUI-64: 16 upper-case hex digits, most significant byte first' });
const text64 = (description: string) => Type.String({ minLength: 1, maxLength: 64, pattern: '^[^\\u0000-\\u001F\\u007F]*$', description: `${description}: 1 to 64 characters, no control characters` });
/** RFC 3394 output for a 16-byte key is 24 bytes: exactly 32 base64url characters, no padding. */
const WrappedKey = Type.String({ pattern: `^${B64URL}{32}$`, description: 'RFC 3394 AES key wrap (24 bytes) of a 16-byte key under the batch key, base64url without padding' });
/** RFC 7638 SHA-256 thumbprint: 32 bytes, 43 base64url characters. */
const Thumbprint = Type.String({ pattern: `^${B64URL}{43}$`, description: 'RFC 7638 JWK thumbprint (SHA-256), base64url' });
const MasterKeyId = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$', description: 'derivation master key id: letters, digits, ".", "_", "-"; 1 to 64 characters, starting with a letter or digit' });
const MacVersion = Type.Union(macVersions.map((v) => Type.Literal(v)), { description: `LoRaWAN L2 version, one of ${macVersions.join(', ')}` });

export const DeviceIdentity = {
  devEui: Eui,
  joinEui: Eui,
  macVersion: MacVersion,
  profile: Type.Optional(text64('device profile name, free text')),
  serialNumber: Type.Optional(text64('serial number')),
  claimCodeHash: Type.Optional(Type.String({ pattern: '^[0-9a-f]{64}$', description: 'lower-case hex SHA-256 of UTF-8 "DEVEUI:CLAIMCODE" (claim code normalised)' })),
};

export const IdentityDeviceSchema = Type.Object(DeviceIdentity, { additionalProperties: false });
export const KeyedDeviceSchema = Type.Object(
  {
    ...DeviceIdentity,
    appKey: WrappedKey,
    nwkKey: Type.Optional(WrappedKey),
  },
  { additionalProperties: false, description: 'nwkKey is required for LoRaWAN 1.1 and forbidden for 1.0.x' },
);
export type IdentityDevice = Static<typeof IdentityDeviceSchema>;
export type KeyedDevice = Static<typeof KeyedDeviceSchema>;

const BatchKey = Type.Object(
  {
    alg: Type.Union([Type.Literal('RSA-OAEP'), Type.Literal('RSA-OAEP-256')], { description: 'RSA-OAEP: SHA-1 and MGF1-SHA-1; RSA-OAEP-256: SHA-256 and MGF1-SHA-256; no label' }),
    // RSA 2048 to 4096 bits: 256 to 512 bytes.
    encryptedKey: Type.String({ pattern: `^${B64URL}+$`, minLength: 342, maxLength: 683, description: 'the 32-byte AES-256 batch key encrypted to the recipient, base64url' }),
  },
  { additionalProperties: false },
);

function common<K extends BatchKind>(kind: K) {
  return {
    version: Type.Literal(SEALED_BATCH_VERSION),
    batchId: Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$', description: 'UUID version 4, lower case' }),
    kind: Type.Literal(kind),
    maker: text64('name of the maker identity as registered in Joinkeep'),
    createdAt: Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?Z$', description: 'RFC 3339 date-time in UTC' }),
    recipient: Type.Object({ kid: Thumbprint }, { additionalProperties: false }),
    deviceCount: Type.Integer({ minimum: 0, maximum: MAX_DEVICES, description: 'equals the length of devices' }),
  };
}

const devicesOf = <T extends TSchema>(device: T) => Type.Array(device, { maxItems: MAX_DEVICES });

export const DeviceKeysPayloadSchema = Type.Object({ ...common('device-keys'), batchKey: BatchKey, devices: devicesOf(KeyedDeviceSchema) }, { additionalProperties: false });
/**
 * A device handed over by another Join Server carries its join state: a LoRaWAN 1.1 device accepts only a JoinNonce
 * above the last one it saw, and a counter-based DevNonce (1.0.4, 1.1) must not be accepted again.
 */
export const TransferDeviceSchema = Type.Object(
  {
    ...DeviceIdentity,
    appKey: WrappedKey,
    nwkKey: Type.Optional(WrappedKey),
    joinState: Type.Object(
      {
        lastJoinNonce: Type.Integer({ minimum: 0, maximum: 0xffffff, description: 'last JoinNonce the sending Join Server issued to the device (0 = none)' }),
        lastDevNonce: Type.Optional(Type.Integer({ minimum: 0, maximum: 0xffff, description: 'last DevNonce the sending Join Server accepted, if any' })),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false, description: 'nwkKey is required for LoRaWAN 1.1 and forbidden for 1.0.x' },
);
export type TransferDevice = Static<typeof TransferDeviceSchema>;
export const TransferPayloadSchema = Type.Object({ ...common('transfer'), batchKey: BatchKey, devices: devicesOf(TransferDeviceSchema) }, { additionalProperties: false });
export const DerivedPayloadSchema = Type.Object({ ...common('derived'), derivedFrom: MasterKeyId, devices: devicesOf(IdentityDeviceSchema) }, { additionalProperties: false });
export const DerivationMasterPayloadSchema = Type.Object(
  {
    ...common('derivation-master'),
    batchKey: BatchKey,
    derivationMaster: Type.Object({ id: MasterKeyId, wrappedKey: WrappedKey }, { additionalProperties: false }),
    devices: Type.Array(IdentityDeviceSchema, { maxItems: 0 }),
  },
  { additionalProperties: false },
);

export const payloadSchemas = {
  'device-keys': DeviceKeysPayloadSchema,
  derived: DerivedPayloadSchema,
  'derivation-master': DerivationMasterPayloadSchema,
  transfer: TransferPayloadSchema,
} as const;

export const SealedBatchPayloadSchema = Type.Union([DeviceKeysPayloadSchema, DerivedPayloadSchema, DerivationMasterPayloadSchema, TransferPayloadSchema]);
export type SealedBatchPayload = Static<typeof SealedBatchPayloadSchema>;
export type KeyedPayload = Extract<SealedBatchPayload, { kind: 'device-keys' | 'transfer' }>;

/** RFC 7515 §7.2.2 flattened JSON serialization; no unprotected header, so everything that matters is signed. */
export const EnvelopeSchema = Type.Object(
  {
    protected: Type.String({ pattern: `^${B64URL}+$` }),
    payload: Type.String({ pattern: `^${B64URL}+$` }),
    signature: Type.String({ pattern: `^${B64URL}+$` }),
  },
  { additionalProperties: false },
);
export type Envelope = Static<typeof EnvelopeSchema>;

/** Nothing else is allowed (no crit, b64, jwk, x5u…): the key comes only from Joinkeep's maker registry. */
export const ProtectedHeaderSchema = Type.Object(
  {
    alg: Type.Union(SIGNATURE_ALGORITHMS.map((a) => Type.Literal(a))),
    kid: Thumbprint,
    typ: Type.Literal(SEALED_BATCH_TYP),
  },
  { additionalProperties: false },
);
export type ProtectedHeader = Static<typeof ProtectedHeaderSchema>;

/** Parts that recur in the payload schema, published once each under $defs and referenced. */
const SHARED_PARTS: Record<string, TSchema> = { keyedDevice: KeyedDeviceSchema, identityDevice: IdentityDeviceSchema, batchKey: BatchKey, eui: Eui, wrappedKey: WrappedKey, masterKeyId: MasterKeyId, macVersion: MacVersion };

/** The JSON Schema (2020-12) of the payload, as published in docs/specs/sealed-batch.schema.json. */
export function sealedBatchJsonSchema(): Record<string, unknown> {
  // JSON round trip drops TypeBox's symbol-keyed metadata.
  const plain = (s: TSchema): unknown => JSON.parse(JSON.stringify(s)) as unknown;
  const shared = Object.entries(SHARED_PARTS).map(([name, schema]) => ({ name, text: JSON.stringify(plain(schema)) }));
  // Replaces every subtree equal to a shared part (not the part itself at its own root) by a $ref to it.
  const hoist = (node: unknown, root = true): unknown => {
    if (typeof node !== 'object' || node === null) return node;
    if (!root) {
      const text = JSON.stringify(node);
      const part = shared.find((p) => p.text === text);
      if (part) return { $ref: `#/$defs/${part.name}` };
    }
    if (Array.isArray(node)) return node.map((n) => hoist(n, false));
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, hoist(v, false)]));
  };
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'urn:joinkeep:sealed-batch:v1:payload',
    title: 'Joinkeep sealed batch, payload version 1',
    description:
      'The JWS payload of a sealed batch (docs/specs/sealed-batch.md). Not expressible here and checked by the importer: deviceCount equals the number of devices; DevEUIs are unique; for kinds device-keys and transfer, nwkKey is present exactly for LoRaWAN 1.1 devices; createdAt is a real date.',
    ...(hoist(plain(SealedBatchPayloadSchema)) as Record<string, unknown>),
    $defs: {
      ...Object.fromEntries(Object.entries(SHARED_PARTS).map(([name, schema]) => [name, hoist(plain(schema))])),
      envelope: plain(EnvelopeSchema),
      protectedHeader: hoist(plain(ProtectedHeaderSchema)),
    },
  };
}

/** docs/specs/sealed-batch.schema.json, byte for byte. */
export function sealedBatchSchemaText(): string {
  return `${JSON.stringify(sealedBatchJsonSchema(), null, 2)}\n`;
}
