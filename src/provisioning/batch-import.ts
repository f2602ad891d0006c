import { createHash, randomBytes } from 'node:crypto';
import { type KeyCustody, type KeyHandle, derivationKeyHandle, rootKeyHandle } from '../custody/custody.js';
import { CustodyError } from '../custody/errors.js';
import { type Eui64, type MacVersion, isLoRaWAN11, vendorKdfInput } from '../protocol/index.js';
import { type AuditEvent, type BatchImport, type InventoryDevice, StorageError, type Storage } from '../storage/index.js';
import { ProvisioningError } from './errors.js';
import type { SealedBatchPayload } from './sealed-batch/schema.js';
import { verifySealedBatch } from './sealed-batch/verify.js';

/*
 * Import of a sealed batch (docs/specs/sealed-batch.md): verify the maker's signature, check the batch is addressed
 * to one of our receiving keys, unwrap the keys straight into custody, and write the batch, the inventory and the
 * audit events in one transaction. All or nothing: keys imported into custody are removed again if the database
 * write fails. The batch file itself is not stored.
 */

export interface BatchImportDeps {
  readonly storage: Storage;
  readonly custody: KeyCustody;
  readonly actor: string;
  readonly now?: () => Date;
  /**
   * Called with the maker whose signature verified, before anything else is looked at: throws to refuse (the REST API
   * accepts a batch only from a maker of the caller's organisation). A refused caller learns nothing more of the batch.
   */
  readonly authorizeMaker?: (maker: string) => Promise<void>;
}

export interface BatchImportReport {
  readonly batchId: string;
  readonly maker: string;
  readonly kind: SealedBatchPayload['kind'];
  readonly devices: number;
}

/** One device of a refused batch and why it was refused. */
export interface DeviceConflict {
  readonly devEui: string;
  readonly reason: 'already known' | 'duplicate in batch';
}

export async function importSealedBatch(deps: BatchImportDeps, file: Uint8Array): Promise<BatchImportReport> {
  const now = deps.now ?? (() => new Date());
  const { payload, maker } = await verifySealedBatch(file, async (kid) => {
    const m = await deps.storage.findMakerByKeyId(kid);
    return m === undefined ? undefined : { name: m.name, jwk: m.publicJwk };
  });
  await deps.authorizeMaker?.(maker);
  const payloadSha256 = createHash('sha256').update(JSON.stringify(payload)).digest('hex').toUpperCase();
  const earlier = await deps.storage.getBatch(payload.batchId);
  if (earlier !== undefined) {
    // A replay changes nothing, and says so: idempotent in effect, but never silent.
    if (earlier.payloadSha256 === payloadSha256 && earlier.maker === maker) {
      throw new ProvisioningError('BATCH_ALREADY_IMPORTED', `batch ${payload.batchId} of ${maker} was already imported on ${earlier.importedAt.toISOString()}; nothing was imported`);
    }
    throw new ProvisioningError('BATCH_ID_REUSED', `batch ${payload.batchId} was imported before with other contents (imported ${earlier.importedAt.toISOString()}); a new batch needs a new batchId`);
  }
  if (payload.kind === 'derivation-master' || payload.kind === 'device-keys' || payload.kind === 'transfer') {
    await checkRecipient(deps.custody, payload.recipient.kid);
  }
  const known = await deps.storage.findKnownDevEuis(payload.devices.map((d) => d.devEui as Eui64));
  if (known.length > 0) {
    throw new ProvisioningError(
      'BATCH_CONFLICT',
      `${known.length} of the batch's ${payload.devices.length} devices are already known (devices or inventory here): ${known.slice(0, 20).join(', ')}${known.length > 20 ? ` and ${known.length - 20} more` : ''}; nothing was imported`,
      { conflicts: known.map((devEui): DeviceConflict => ({ devEui, reason: 'already known' })) },
    );
  }

  const importedAt = now();
  const importId = randomBytes(4).toString('hex');
  const created: KeyHandle[] = [];
  const inventory: InventoryDevice[] = [];
  let derivationKey: BatchImport['derivationKey'];
  try {
    if (payload.kind === 'derivation-master') {
      const master = payload.derivationMaster;
      if (await deps.storage.getDerivationKey(master.id)) {
        throw new ProvisioningError('BATCH_CONFLICT', `a derivation master with id "${master.id}" is already in custody; nothing was imported`);
      }
      const handle = derivationKeyHandle(`${master.id}/${importId}`);
      await importKeys(deps.custody, payload.recipient.kid, payload.batchKey, [{ handle, usage: 'derivation', wrapped: b64u(master.wrappedKey) }]);
      created.push(handle);
      derivationKey = { id: master.id, maker, keyHandle: handle, batchId: payload.batchId, createdAt: importedAt };
    } else if (payload.kind === 'derived') {
      const master = await deps.storage.getDerivationKey(payload.derivedFrom);
      if (master === undefined || master.maker !== maker) {
        throw new ProvisioningError('DERIVATION_KEY_UNKNOWN', `batch ${payload.batchId} derives its keys from "${payload.derivedFrom}", which ${maker} has not sealed to this Join Server; import that derivation-master batch first`);
      }
      const keys = payload.devices.flatMap((d) => {
        const entry = inventoryEntry(d, maker, payload.batchId, importId, importedAt);
        inventory.push(entry);
        const blocks = [{ handle: entry.appKeyHandle, block: vendorKdfInput(entry.devEui, 'AppKey') }];
        if (entry.nwkKeyHandle !== null) blocks.push({ handle: entry.nwkKeyHandle, block: vendorKdfInput(entry.devEui, 'NwkKey') });
        return blocks;
      });
      await deps.custody.importDerived({ master: master.keyHandle, keys });
      for (const k of keys) created.push(k.handle); // not push(...): 200,000 arguments overflow the stack
    } else {
      const keys = payload.devices.flatMap((d) => {
        const entry = inventoryEntry(d, maker, payload.batchId, importId, importedAt);
        inventory.push(entry);
        const wrapped = [{ handle: entry.appKeyHandle, usage: 'root' as const, wrapped: b64u(d.appKey) }];
        if (entry.nwkKeyHandle !== null) wrapped.push({ handle: entry.nwkKeyHandle, usage: 'root', wrapped: b64u(d.nwkKey!) });
        return wrapped;
      });
      await importKeys(deps.custody, payload.recipient.kid, payload.batchKey, keys);
      for (const k of keys) created.push(k.handle); // not push(...): 200,000 arguments overflow the stack
    }
    await deps.storage.importBatch({
      batch: { batchId: payload.batchId, maker, kind: payload.kind, payloadSha256, deviceCount: payload.devices.length, createdAt: new Date(payload.createdAt), importedAt },
      inventory,
      derivationKey,
      audit: auditEvents(deps.actor, payload, maker, inventory, importedAt),
    });
    return { batchId: payload.batchId, maker, kind: payload.kind, devices: payload.devices.length };
  } catch (error) {
    if (created.length > 0) await deps.custody.deleteKeys(created).catch(() => undefined);
    if (error instanceof StorageError && (error.code === 'BATCH_EXISTS' || error.code === 'DEVICE_EXISTS')) {
      throw new ProvisioningError('BATCH_CONFLICT', `${error.message}; nothing was imported`);
    }
    throw error;
  }
}

const b64u = (text: string): Buffer => Buffer.from(text, 'base64url');

async function checkRecipient(custody: KeyCustody, kid: string): Promise<void> {
  const ours = await custody.listReceivingKeys();
  if (!ours.some((k) => k.kid === kid)) {
    throw new ProvisioningError(
      'BATCH_WRONG_RECIPIENT',
      `the batch is sealed to receiving key ${kid}, which this Join Server does not hold (ours: ${ours.map((k) => k.kid).join(', ') || 'none — create one with `joinkeep receiving-key create`'})`,
    );
  }
}

async function importKeys(
  custody: KeyCustody,
  receivingKid: string,
  batchKey: { readonly alg: 'RSA-OAEP' | 'RSA-OAEP-256'; readonly encryptedKey: string },
  keys: { handle: KeyHandle; usage: 'root' | 'derivation'; wrapped: Uint8Array }[],
): Promise<void> {
  try {
    await custody.importSealed({
      receivingKid,
      batchKey: { oaep: batchKey.alg === 'RSA-OAEP' ? 'sha1' : 'sha256', encrypted: b64u(batchKey.encryptedKey) },
      keys,
    });
  } catch (error) {
    if (error instanceof CustodyError && (error.code === 'UNWRAP_FAILED' || error.code === 'INVALID_KEY')) {
      throw new ProvisioningError('UNWRAP_FAILED', `the batch's keys cannot be unwrapped with our receiving key: ${error.message}; nothing was imported`);
    }
    throw error;
  }
}

function inventoryEntry(d: SealedBatchPayload['devices'][number], maker: string, batchId: string, importId: string, createdAt: Date): InventoryDevice {
  const devEui = d.devEui as Eui64;
  const macVersion = d.macVersion as MacVersion;
  return {
    devEui,
    joinEui: d.joinEui as Eui64,
    macVersion,
    appKeyHandle: rootKeyHandle(devEui, 'AppKey', importId),
    nwkKeyHandle: isLoRaWAN11(macVersion) ? rootKeyHandle(devEui, 'NwkKey', importId) : null,
    maker,
    batchId,
    profile: d.profile ?? null,
    serialNumber: d.serialNumber ?? null,
    claimCodeHash: d.claimCodeHash ?? null,
    // A transfer from another Join Server carries the device's join state: JoinNonces must keep increasing.
    lastJoinNonce: 'joinState' in d && d.joinState !== undefined ? d.joinState.lastJoinNonce : 0,
    lastDevNonce: 'joinState' in d && d.joinState !== undefined ? (d.joinState.lastDevNonce ?? null) : null,
    createdAt,
  };
}

function auditEvents(actor: string, payload: SealedBatchPayload, maker: string, inventory: readonly InventoryDevice[], at: Date): AuditEvent[] {
  return [
    {
      at,
      actor,
      action: 'batch.import',
      subject: `batch/${payload.batchId}`,
      outcome: 'success',
      details: { maker, kind: payload.kind, devices: inventory.length, createdAt: payload.createdAt, ...(payload.kind === 'derived' ? { derivedFrom: payload.derivedFrom } : {}) },
    },
    ...inventory.map((d) => ({
      at,
      actor,
      action: 'device.import',
      subject: `device/${d.devEui}`,
      outcome: 'success',
      details: { batchId: payload.batchId, maker, joinEui: d.joinEui, macVersion: d.macVersion, keyHandles: d.nwkKeyHandle === null ? [d.appKeyHandle] : [d.appKeyHandle, d.nwkKeyHandle] },
    })),
  ];
}
