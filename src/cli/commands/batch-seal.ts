import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { readFile, stat } from 'node:fs/promises';
import type { JWK } from 'jose';
import { UsageError, print, readSecretFile } from '../context.js';

/*
 * The maker's side of sealed batches, run in a factory: `batch keygen` makes the maker's signing key pair,
 * `batch seal` seals devices' root keys to a Joinkeep installation. Neither needs a data directory, and
 * neither ever prints a key. (`batch import`, on the Joinkeep side, is registered by its own file.)
 */

export function registerBatchSealCommands(batch: Command): void {
  batch
    .command('keygen')
    .description("create a maker's signing key pair: a private JWK (mode 0600, keep it in the factory) and the public JWK to register with Joinkeep")
    .requiredOption('--out-private <file>', 'where to write the private JWK (must not exist)')
    .requiredOption('--out-public <file>', 'where to write the public JWK (must not exist)')
    .option('--alg <alg>', 'ES256 (P-256) or EdDSA (Ed25519)', choice(['ES256', 'EdDSA']), 'ES256')
    .option('--json', 'print JSON')
    .action(async (o: { outPrivate: string; outPublic: string; alg: 'ES256' | 'EdDSA'; json?: boolean }) => {
      const { generateMakerKey, writeNewFiles } = await import('../../provisioning/sealed-batch/index.js');
      const pair = await generateMakerKey(o.alg);
      writeNewFiles([
        { path: o.outPrivate, content: `${JSON.stringify(pair.privateJwk, null, 2)}\n` },
        { path: o.outPublic, content: `${JSON.stringify(pair.publicJwk, null, 2)}\n`, mode: 0o644 },
      ]);
      print(!!o.json, { alg: pair.alg, kid: pair.kid, privateKeyFile: o.outPrivate, publicKeyFile: o.outPublic }, () =>
        `Created a ${pair.alg} signing key, kid ${pair.kid}.\nPrivate key: ${o.outPrivate} (mode 0600; keep it secret).\nPublic key: ${o.outPublic} (register it with Joinkeep as your maker identity).`,
      );
    });

  batch
    .command('seal')
    .description('seal devices to a Joinkeep installation: writes the sealed batch, a key-free manifest with claim codes and TR005 QR strings, and (for generated keys) the programmer file')
    .requiredOption('--recipient <file>', "the Joinkeep installation's receiving key, public JWK")
    .requiredOption('--signing-key <file>', "the maker's private JWK (from `batch keygen`)")
    .requiredOption('--maker <name>', 'the maker name Joinkeep has registered for this signing key')
    .option('--kind <kind>', 'device-keys, derived or derivation-master', choice(['device-keys', 'derived', 'derivation-master']), 'device-keys')
    .option('--input <file>', "the factory's programming output: CSV with a header row, or a JSON array (devEui, joinEui, macVersion, appKey, nwkKey, serialNumber, profile)")
    .option('--generate <n>', 'generate N devices with fresh random keys instead of reading --input', positiveInteger)
    .option('--dev-eui-start <hex>', 'first DevEUI of --generate (consecutive from there)')
    .option('--join-eui <hex>', 'JoinEUI of --generate')
    .option('--mac-version <version>', 'LoRaWAN version of --generate (1.0.0 … 1.0.4, 1.1); with --input, the default for rows without one')
    .option('--profile <name>', 'device profile name for devices that have none')
    .option('--qr-profile-id <hex>', 'TR005 ProfileID for the QR codes: VendorID ‖ VendorProfileID, 8 hex digits', '00000000')
    .option('--oaep <hash>', "RSA-OAEP hash for the batch key: sha256 or sha1 (default: what the recipient's JWK asks for in alg, RSA-OAEP = sha1 for an HSM that unwraps only SHA-1; else sha256)", choice(['sha1', 'sha256']))
    .option('--derived-from <id>', 'kind derived: id of the derivation master key already sealed to this Joinkeep')
    .option('--master-key-file <file>', 'kind derivation-master: file holding the 16-byte master key as 32 hex digits')
    .option('--master-key-id <id>', 'kind derivation-master: the id devices will name in --derived-from')
    .requiredOption('--out <file>', 'the sealed batch to write')
    .option('--manifest <file>', 'key-free manifest, CSV')
    .option('--manifest-json <file>', 'key-free manifest, JSON')
    .option('--programmer-file <file>', 'with --generate: CSV of devEui, joinEui, appKey, nwkKey for the device programmer (mode 0600); the only file with keys in clear')
    .option('--json', 'print JSON')
    .action(async (o: SealFlags) => {
      const { makerToolOptionProblem, sealFactoryBatch } = await import('../../provisioning/sealed-batch/index.js');
      const devices = deviceSource(o);
      const kind = o.kind;
      const shape = {
        kind,
        ...(devices === undefined ? {} : { devices }),
        ...(o.derivedFrom === undefined ? {} : { derivedFrom: o.derivedFrom }),
        ...(o.manifest === undefined ? {} : { manifestCsv: o.manifest }),
        ...(o.manifestJson === undefined ? {} : { manifestJson: o.manifestJson }),
        ...(o.programmerFile === undefined ? {} : { programmerFile: o.programmerFile }),
      };
      if (kind === 'derivation-master' && (o.masterKeyFile === undefined || o.masterKeyId === undefined)) throw new UsageError('--kind derivation-master needs --master-key-file and --master-key-id');
      if (kind !== 'derivation-master' && (o.masterKeyFile !== undefined || o.masterKeyId !== undefined)) throw new UsageError('--master-key-file and --master-key-id are for --kind derivation-master');
      if (kind !== 'derived' && o.derivedFrom !== undefined) throw new UsageError('--derived-from is for --kind derived');
      const problem = makerToolOptionProblem({ ...shape, ...(kind === 'derivation-master' ? { master: { id: '', key: Buffer.alloc(0) } } : {}) });
      if (problem !== undefined) throw new UsageError(`${problem} (${usageHint(kind)})`);

      const [recipientJwk, signingKey] = await Promise.all([readJwk(o.recipient, '--recipient'), readJwk(o.signingKey, '--signing-key', true)]);
      const master = kind === 'derivation-master' ? { id: o.masterKeyId!, key: parseMasterKey(await readSecretFile(o.masterKeyFile!, '--master-key-file')) } : undefined;
      const r = await sealFactoryBatch({
        ...shape,
        recipientJwk,
        signingKey,
        maker: o.maker,
        ...(o.oaep === undefined ? {} : { oaep: o.oaep }),
        qrProfileId: o.qrProfileId,
        out: o.out,
        ...(master === undefined ? {} : { master }),
        ...(o.macVersion === undefined ? {} : { defaultMacVersion: o.macVersion }),
        ...(o.profile === undefined ? {} : { profile: o.profile }),
      });
      if (r.ignoredColumns.length > 0) process.stderr.write(`joinkeep: warning: ignored input columns: ${r.ignoredColumns.join(', ')}\n`);
      print(!!o.json, r, () => `Sealed batch ${r.batchId} (${r.kind}, ${r.deviceCount} device${r.deviceCount === 1 ? '' : 's'}).\nWrote: ${r.written.join(', ')}`);
    });
}

interface SealFlags {
  recipient: string;
  signingKey: string;
  maker: string;
  kind: 'device-keys' | 'derived' | 'derivation-master';
  input?: string;
  generate?: number;
  devEuiStart?: string;
  joinEui?: string;
  macVersion?: string;
  profile?: string;
  qrProfileId: string;
  oaep?: 'sha1' | 'sha256';
  derivedFrom?: string;
  masterKeyFile?: string;
  masterKeyId?: string;
  out: string;
  manifest?: string;
  manifestJson?: string;
  programmerFile?: string;
  json?: boolean;
}

function deviceSource(o: SealFlags) {
  if (o.input !== undefined && o.generate !== undefined) throw new UsageError('give --input or --generate, not both');
  if (o.generate === undefined) {
    if (o.devEuiStart !== undefined || o.joinEui !== undefined) throw new UsageError('--dev-eui-start and --join-eui go with --generate');
    return o.input === undefined ? undefined : { input: o.input };
  }
  if (o.devEuiStart === undefined || o.joinEui === undefined || o.macVersion === undefined) throw new UsageError('--generate needs --dev-eui-start, --join-eui and --mac-version');
  return { generate: { count: o.generate, devEuiStart: o.devEuiStart, joinEui: o.joinEui, macVersion: o.macVersion } };
}

function usageHint(kind: SealFlags['kind']): string {
  switch (kind) {
    case 'derivation-master':
      return 'usage: --kind derivation-master --master-key-file FILE --master-key-id ID --out FILE';
    case 'derived':
      return 'usage: --kind derived --derived-from ID (--input FILE | --generate N …) --manifest FILE';
    case 'device-keys':
      return 'usage: --input FILE --manifest FILE, or --generate N … --manifest FILE --programmer-file FILE';
  }
}

async function readJwk(path: string, option: string, secret = false): Promise<JWK> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new UsageError(`${option} ${path} cannot be read`);
  }
  if (secret && ((await stat(path)).mode & 0o077) !== 0) process.stderr.write(`joinkeep: warning: ${path} is readable by other users; it holds your signing key (chmod 600)\n`);
  try {
    const jwk = JSON.parse(text) as unknown;
    if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw new Error('not an object');
    return jwk as JWK;
  } catch {
    throw new UsageError(`${option} ${path} is not a JWK (a JSON object)`);
  }
}

function parseMasterKey(text: string): Buffer {
  const hex = text.replace(/^0x/i, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new UsageError('--master-key-file must hold the 16-byte master key as 32 hex digits');
  return Buffer.from(hex, 'hex');
}

function choice<T extends string>(values: readonly T[]): (value: string) => T {
  return (value) => {
    if (!values.includes(value as T)) throw new InvalidArgumentError(`expected one of ${values.join(', ')}`);
    return value as T;
  };
}

function positiveInteger(value: string): number {
  if (!/^[1-9]\d*$/.test(value)) throw new InvalidArgumentError('expected a positive integer');
  return Number(value);
}
