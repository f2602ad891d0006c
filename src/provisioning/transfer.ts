import { createHash, randomUUID } from 'node:crypto';
import { type JWK, FlattenedSign, flattenedVerify, importJWK } from 'jose';
import type { JsonWebKeyRsaPublic, KeyCustody } from '../custody/custody.js';
import { ProtocolError, eui64FromBeHex } from '../protocol/index.js';
import type { AuditEvent, Storage, TransferRecord } from '../storage/storage.js';
import { ProvisioningError } from './errors.js';
import { receivingKeyKid, signSealedBatch, signatureAlgorithmOf, type OaepHash } from './sealed-batch/seal.js';
import { parseSealedBatch } from './sealed-batch/format.js';
import type { SealedBatchPayload } from './sealed-batch/schema.js';

/*
 * Join-Server-to-Join-Server transfer (docs/specs/sealed-batch.md, "Transfer"). The sender seals the devices' root
 * keys to the receiver's receiving key in a batch of kind "transfer", signed with the sender's own signing key (the
 * receiver registered it as a maker of kind join-server), and carrying each device's join state so JoinNonces keep
 * increasing. The devices stay here until the receiver's signed receipt arrives; then they and their keys are
 * retired. Neither side ever holds a root key in clear outside custody.
 */

export const RECEIPT_TYP = 'joinkeep-transfer-receipt+json';

export interface ExportInput {
  /** The receiver as registered here: a maker of kind join-server (its receipt is checked with its key). */
  readonly recipient: string;
  /** The receiver's receiving key (public JWK), as `joinkeep receiving-key show` printed it there. */
  readonly recipientKey: JsonWebKeyRsaPublic;
  readonly devEuis: readonly string[];
  /** Our name as the receiver registered us. */
  readonly sender: string;
  /** Our signing key (private JWK) whose public half the receiver registered. */
  readonly signingKey: JWK;
  readonly oaep?: OaepHash;
}

/**
 * Seals the devices to the receiver and records the pending transfer. `custody` needs only exportSealed: a PKCS#11
 * data directory in trusted-KEK mode passes one that runs without an open custody (app/transfer.ts).
 */
export async function exportTransfer(deps: { storage: Storage; custody: Pick<KeyCustody, 'exportSealed'>; actor: string; now?: () => Date }, input: ExportInput): Promise<{ file: Buffer; batchId: string; devices: number }> {
  const now = (deps.now ?? (() => new Date()))();
  const recipient = await deps.storage.getMaker(input.recipient);
  if (recipient === undefined || recipient.kind !== 'join-server') {
    throw new ProvisioningError('MAKER_UNKNOWN', `"${input.recipient}" is not a registered Join Server: register its signing key first with \`joinkeep maker add --kind join-server\``);
  }
  const devEuis = input.devEuis.map((d) => {
    try {
      return eui64FromBeHex(d, '--dev-eui');
    } catch (error) {
      if (error instanceof ProtocolError) throw new ProvisioningError('INVALID_INPUT', error.message);
      throw error;
    }
  });
  if (devEuis.length === 0) throw new ProvisioningError('INVALID_INPUT', 'no device to transfer');
  if (new Set(devEuis).size !== devEuis.length) throw new ProvisioningError('INVALID_INPUT', 'a DevEUI is given twice');

  const devices = [];
  for (const devEui of devEuis) {
    const bound = await deps.storage.getDevice(devEui);
    const unbound = bound === undefined ? await deps.storage.getInventoryDevice(devEui) : undefined;
    const d = bound ?? unbound;
    if (d === undefined) throw new ProvisioningError('INVALID_INPUT', `device ${devEui} is not held here`);
    const state = bound !== undefined ? await deps.storage.getJoinState(devEui, bound.joinEui) : { lastJoinNonce: unbound!.lastJoinNonce, lastDevNonce: unbound!.lastDevNonce };
    devices.push({ record: d, lastJoinNonce: state.lastJoinNonce, lastDevNonce: state.lastDevNonce });
  }
  const handles = devices.flatMap((d) => (d.record.nwkKeyHandle === null ? [d.record.appKeyHandle] : [d.record.appKeyHandle, d.record.nwkKeyHandle]));
  const oaep = input.oaep ?? 'sha256';
  const sealed = await deps.custody.exportSealed(input.recipientKey, oaep, handles);
  let next = 0;
  const batchId = randomUUID();
  const payload: SealedBatchPayload = {
    version: 1,
    batchId,
    kind: 'transfer',
    maker: input.sender,
    createdAt: now.toISOString(),
    recipient: { kid: await receivingKeyKid(input.recipientKey as JWK) },
    deviceCount: devices.length,
    batchKey: { alg: oaep === 'sha1' ? 'RSA-OAEP' : 'RSA-OAEP-256', encryptedKey: sealed.encryptedBatchKey.toString('base64url') },
    devices: devices.map(({ record, lastJoinNonce, lastDevNonce }) => ({
      devEui: record.devEui,
      joinEui: record.joinEui,
      macVersion: record.macVersion,
      appKey: sealed.wrapped[next++]!.toString('base64url'),
      ...(record.nwkKeyHandle === null ? {} : { nwkKey: sealed.wrapped[next++]!.toString('base64url') }),
      joinState: { lastJoinNonce, ...(lastDevNonce === null ? {} : { lastDevNonce }) },
    })),
  };
  const file = await signSealedBatch(payload, input.signingKey);
  const transfer: TransferRecord = { batchId, recipient: recipient.name, devEuis, state: 'pending', createdAt: now, confirmedAt: null };
  await deps.storage.insertTransfer(transfer);
  await deps.storage.appendAudit({ at: now, actor: deps.actor, action: 'transfer.export', subject: `batch/${batchId}`, outcome: 'success', details: { recipient: recipient.name, devices: devEuis } });
  return { file, batchId, devices: devices.length };
}

/**
 * The receiver's side, after importing a transfer batch: a receipt signed with its own signing key, naming the batch
 * and a digest of the DevEUIs it now holds. The sender retires the devices only on a receipt that verifies.
 */
export async function signTransferReceipt(input: { readonly file: Uint8Array; readonly receiver: string; readonly signingKey: JWK; readonly at: Date }): Promise<Buffer> {
  // Already verified by the import that precedes the receipt; parsed again here only for its ids.
  const { payload } = parseSealedBatch(input.file);
  const body = { typ: RECEIPT_TYP, batchId: payload.batchId, receiver: input.receiver, devEuisSha256: devEuisDigest(payload.devices.map((d) => d.devEui)), importedAt: input.at.toISOString() };
  const alg = signatureAlgorithmOf(input.signingKey);
  const key = await importJWK(input.signingKey, alg);
  const jws = await new FlattenedSign(Buffer.from(JSON.stringify(body))).setProtectedHeader({ alg, kid: input.signingKey.kid ?? '', typ: RECEIPT_TYP }).sign(key);
  return Buffer.from(`${JSON.stringify(jws)}\n`);
}

/** The sender's side: verify the receipt with the receiver's registered key, then retire the devices and their keys. */
export async function confirmTransfer(deps: { storage: Storage; custody: KeyCustody; actor: string; now?: () => Date }, receipt: Uint8Array): Promise<{ batchId: string; devices: number }> {
  let envelope: { protected: string; payload: string; signature: string };
  let claimed: { batchId?: unknown; receiver?: unknown; devEuisSha256?: unknown; typ?: unknown };
  try {
    envelope = JSON.parse(Buffer.from(receipt).toString('utf8')) as typeof envelope;
    claimed = JSON.parse(Buffer.from(envelope.payload, 'base64url').toString('utf8')) as typeof claimed;
  } catch {
    throw new ProvisioningError('BATCH_INVALID', 'the receipt is not a JWS (flattened JSON) of a transfer receipt');
  }
  if (claimed.typ !== RECEIPT_TYP || typeof claimed.batchId !== 'string') throw new ProvisioningError('BATCH_INVALID', 'not a transfer receipt');
  const transfer = await deps.storage.getTransfer(claimed.batchId);
  if (transfer === undefined) throw new ProvisioningError('INVALID_INPUT', `no transfer ${claimed.batchId} was exported from here`);
  if (transfer.state !== 'pending') throw new ProvisioningError('BATCH_ALREADY_IMPORTED', `transfer ${transfer.batchId} was confirmed on ${transfer.confirmedAt?.toISOString()}; nothing changed`);
  const receiver = await deps.storage.getMaker(transfer.recipient);
  if (receiver === undefined) throw new ProvisioningError('MAKER_UNKNOWN', `the receiver "${transfer.recipient}" is no longer registered`);
  try {
    // Only the algorithm of the receiver's registered key (the registry holds P-256 or Ed25519 keys only): the receipt's
    // header does not choose it.
    const alg = receiver.publicJwk['kty'] === 'OKP' ? 'EdDSA' : 'ES256';
    await flattenedVerify(envelope, await importJWK(receiver.publicJwk as JWK, alg), { algorithms: [alg] });
  } catch (error) {
    throw new ProvisioningError('BATCH_SIGNATURE_INVALID', `the receipt does not verify with the signing key of "${receiver.name}": ${(error as Error).message}`);
  }
  if (claimed.receiver !== receiver.name || claimed.devEuisSha256 !== devEuisDigest(transfer.devEuis)) {
    throw new ProvisioningError('BATCH_SIGNATURE_INVALID', `the receipt is for other devices or another receiver than transfer ${transfer.batchId}`);
  }
  const at = (deps.now ?? (() => new Date()))();
  const audit: AuditEvent[] = [
    { at, actor: deps.actor, action: 'transfer.confirm', subject: `batch/${transfer.batchId}`, outcome: 'success', details: { recipient: receiver.name, devices: transfer.devEuis.length } },
    ...transfer.devEuis.map((devEui) => ({ at, actor: deps.actor, action: 'device.retire', subject: `device/${devEui}`, outcome: 'success', details: { transfer: transfer.batchId, recipient: receiver.name } })),
  ];
  const handles = await deps.storage.confirmTransfer(transfer.batchId, audit, at);
  // After the commit: a failure here leaves unreferenced keys in custody, never a device without its key.
  await deps.custody.deleteKeys(handles);
  return { batchId: transfer.batchId, devices: transfer.devEuis.length };
}

const devEuisDigest = (devEuis: readonly string[]): string => createHash('sha256').update([...devEuis].sort().join(',')).digest('hex');
