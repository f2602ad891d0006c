import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { JWK } from 'jose';
import { ProvisioningError } from '../errors.js';
import { claimCodeHash, generateClaimCode } from './claim-codes.js';
import { type FactoryDevice, type GenerateOptions, generateDevices, readFactoryInput, wipeKeys } from './factory-input.js';
import { type OutputFile, manifestCsv, manifestJson, manifestRows, programmerFile, writeNewFiles } from './outputs.js';
import { type OaepHash, sealBatch } from './seal.js';

/*
 * `joinkeep batch seal` as a service: devices in (factory file or generated), claim codes made, the batch sealed,
 * every output written at once or not at all. Keys go into the sealed batch (wrapped) and, only when this tool
 * generated them, into the programmer file; nowhere else, and their Buffers are wiped before returning.
 */

export type MakerToolKind = 'device-keys' | 'derived' | 'derivation-master';

export type DeviceSource = { readonly input: string } | { readonly generate: GenerateOptions };

export interface MakerToolOptions {
  readonly recipientJwk: JWK;
  readonly signingKey: JWK;
  readonly maker: string;
  readonly kind: MakerToolKind;
  readonly oaep?: OaepHash;
  /** Where devices come from (kinds device-keys and derived). */
  readonly devices?: DeviceSource;
  /** Defaults for input rows without macVersion / profile. */
  readonly defaultMacVersion?: string;
  readonly profile?: string;
  /** TR005 ProfileID (VendorID ‖ VendorProfileID, 8 hex digits) for the QR codes; default 00000000. */
  readonly qrProfileId?: string;
  /** Kind derived: the id of the derivation master key already sealed to the same Joinkeep. */
  readonly derivedFrom?: string;
  /** Kind derivation-master: the master key and its id. The Buffer is wiped. */
  readonly master?: { readonly id: string; readonly key: Buffer };
  readonly out: string;
  readonly manifestCsv?: string;
  readonly manifestJson?: string;
  /** Required exactly when the tool generates device keys. */
  readonly programmerFile?: string;
}

export interface MakerToolResult {
  readonly batchId: string;
  readonly kind: MakerToolKind;
  readonly deviceCount: number;
  readonly written: readonly string[];
  /** Input columns that were not recognised. */
  readonly ignoredColumns: readonly string[];
}

export async function sealFactoryBatch(o: MakerToolOptions): Promise<MakerToolResult> {
  const problem = makerToolOptionProblem(o);
  if (problem !== undefined) throw new ProvisioningError('INVALID_INPUT', problem);
  if (o.qrProfileId !== undefined && !/^[0-9A-Fa-f]{8}$/.test(o.qrProfileId)) throw new ProvisioningError('INVALID_INPUT', `the TR005 ProfileID ${JSON.stringify(o.qrProfileId)} must be 8 hex digits (VendorID ‖ VendorProfileID)`);
  const outputs = [o.out, o.manifestCsv, o.manifestJson, o.programmerFile].filter((p): p is string => p !== undefined);
  // Fail before any work; writeNewFiles checks again, atomically.
  for (const path of outputs) if (existsSync(path)) throw new ProvisioningError('OUTPUT_EXISTS', `${path} already exists; refusing to overwrite it (move it away or choose another name)`);

  const batchId = randomUUID();
  const createdAt = new Date();
  const common = { recipientJwk: o.recipientJwk, signingKey: o.signingKey, maker: o.maker, batchId, createdAt, ...(o.oaep === undefined ? {} : { oaep: o.oaep }) };

  if (o.kind === 'derivation-master') {
    const master = o.master!;
    try {
      const batch = await sealBatch({ ...common, content: { kind: 'derivation-master', masterKeyId: master.id, masterKey: master.key } });
      writeNewFiles([{ path: o.out, content: batch }]);
    } finally {
      master.key.fill(0);
    }
    return { batchId, kind: o.kind, deviceCount: 0, written: [o.out], ignoredColumns: [] };
  }

  const { devices, ignoredColumns } = await loadDevices(o);
  let programmer: Buffer | undefined;
  try {
    const claimCodes = devices.map(() => generateClaimCode());
    const identities = devices.map((d, i) => ({
      devEui: d.devEui,
      joinEui: d.joinEui,
      macVersion: d.macVersion,
      ...(d.profile === undefined ? {} : { profile: d.profile }),
      ...(d.serialNumber === undefined ? {} : { serialNumber: d.serialNumber }),
      claimCodeHash: claimCodeHash(d.devEui, claimCodes[i]!),
    }));
    const batch =
      o.kind === 'derived'
        ? await sealBatch({ ...common, content: { kind: 'derived', derivedFrom: o.derivedFrom!, devices: identities } })
        : await sealBatch({ ...common, content: { kind: 'device-keys', devices: identities.map((id, i) => withKeys(id, devices[i]!)) } });
    const rows = manifestRows(devices.map((d, i) => ({ ...d, claimCode: claimCodes[i]! })), o.qrProfileId);
    const header = { batchId, kind: o.kind, maker: o.maker, createdAt: createdAt.toISOString() };
    const files: OutputFile[] = [{ path: o.out, content: batch }];
    if (o.manifestCsv !== undefined) files.push({ path: o.manifestCsv, content: manifestCsv(rows) });
    if (o.manifestJson !== undefined) files.push({ path: o.manifestJson, content: manifestJson(header, rows) });
    if (o.programmerFile !== undefined) {
      programmer = programmerFile(devices.map((d) => ({ devEui: d.devEui, joinEui: d.joinEui, appKey: d.appKey!, ...(d.nwkKey === undefined ? {} : { nwkKey: d.nwkKey }) })));
      files.push({ path: o.programmerFile, content: programmer });
    }
    writeNewFiles(files);
    return { batchId, kind: o.kind, deviceCount: devices.length, written: files.map((f) => f.path), ignoredColumns };
  } finally {
    programmer?.fill(0);
    wipeKeys(devices);
  }
}

/**
 * What is wrong with a combination of options, if anything: the rules that keep keys where they belong. The
 * service refuses with INVALID_INPUT; the CLI asks first and reports a usage error.
 */
export function makerToolOptionProblem(o: Pick<MakerToolOptions, 'kind' | 'devices' | 'derivedFrom' | 'master' | 'manifestCsv' | 'manifestJson' | 'programmerFile'>): string | undefined {
  if (o.kind === 'derivation-master') {
    if (o.master === undefined) return 'kind derivation-master needs the master key and its id';
    if (o.devices !== undefined || o.manifestCsv !== undefined || o.manifestJson !== undefined || o.programmerFile !== undefined) {
      return 'kind derivation-master seals one master key: no devices, manifest or programmer file';
    }
    return undefined;
  }
  if (o.devices === undefined) return `kind ${o.kind} needs devices: an input file or a number to generate`;
  if (o.manifestCsv === undefined && o.manifestJson === undefined) return 'a manifest (CSV or JSON) is required: it carries the claim codes, which exist nowhere else';
  if (o.kind === 'derived') {
    if (o.derivedFrom === undefined) return 'kind derived needs the id of its derivation master key';
    if (o.programmerFile !== undefined) return 'kind derived carries no keys, so there is no programmer file';
    return undefined;
  }
  const generating = 'generate' in o.devices;
  // Generated keys must reach the programmer, and only the programmer; read keys were programmed already.
  if (generating && o.programmerFile === undefined) return 'generated keys must go to a programmer file: give one';
  if (!generating && o.programmerFile !== undefined) return 'the keys come from the factory input, which the programmer already has: no programmer file is written';
  return undefined;
}

async function loadDevices(o: MakerToolOptions): Promise<{ devices: FactoryDevice[]; ignoredColumns: string[] }> {
  const source = o.devices!;
  if ('generate' in source) {
    // Kind derived: identities only; the keys are derived from the master, in Joinkeep and in the secure element.
    const g = { ...source.generate, withKeys: o.kind !== 'derived', ...(o.profile === undefined ? {} : { profile: o.profile }) };
    return { devices: generateDevices(g), ignoredColumns: [] };
  }
  return readFactoryInput(source.input, {
    keys: o.kind === 'derived' ? 'forbidden' : 'required',
    ...(o.defaultMacVersion === undefined ? {} : { defaultMacVersion: o.defaultMacVersion }),
    ...(o.profile === undefined ? {} : { defaultProfile: o.profile }),
  });
}

function withKeys<T extends object>(identity: T, d: FactoryDevice): T & { appKey: Uint8Array; nwkKey?: Uint8Array } {
  if (d.appKey === undefined) throw new ProvisioningError('INVALID_INPUT', `${d.source}: appKey is missing for ${d.devEui}`);
  return { ...identity, appKey: d.appKey, ...(d.nwkKey === undefined ? {} : { nwkKey: d.nwkKey }) };
}
