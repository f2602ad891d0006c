import { randomBytes } from 'node:crypto';
import { type KeyCustody, rootKeyHandle } from '../custody/custody.js';
import { CustodyError } from '../custody/errors.js';
import type { AuditSink } from '../observability/audit.js';
import {
  type Eui64,
  type MacVersion,
  type NetId,
  ProtocolError,
  eui64FromBeHex,
  isLoRaWAN11,
  netIdFromBeHex,
  parseKeyEnvelope,
  parseMacVersion,
} from '../protocol/index.js';
import type { DeviceRecord, Storage } from '../storage/storage.js';
import { ProvisioningError } from './errors.js';

export interface AddDeviceInput {
  readonly devEui: string;
  readonly joinEui: string;
  readonly macVersion: string;
  readonly homeNetId: string;
  readonly homeNsId?: string | undefined;
  readonly asId?: string | undefined;
  readonly roamingNetIds?: readonly string[] | undefined;
  /** TS002 KeyEnvelopes (JSON text or object), wrapped under a KEK already in custody. */
  readonly appKey: unknown;
  readonly nwkKey?: unknown;
}

/**
 * Provisions one device: every root key arrives wrapped and is unwrapped only inside custody.
 * All-or-nothing: if the device record cannot be written, the keys just imported are removed again.
 */
export async function addDevice(deps: { storage: Storage; custody: KeyCustody; audit: AuditSink; actor: string }, input: AddDeviceInput): Promise<DeviceRecord> {
  const fields = validate(input);
  const appKey = envelope(input.appKey, '--app-key');
  const nwkKey = input.nwkKey === undefined ? undefined : envelope(input.nwkKey, '--nwk-key');
  if (isLoRaWAN11(fields.macVersion) && nwkKey === undefined) {
    throw new ProvisioningError('INVALID_INPUT', 'a LoRaWAN 1.1 device has two root keys: give --nwk-key as well as --app-key');
  }
  if (!isLoRaWAN11(fields.macVersion) && nwkKey !== undefined) {
    throw new ProvisioningError('INVALID_INPUT', `a LoRaWAN ${fields.macVersion} device has one root key (AppKey): omit --nwk-key`);
  }
  for (const e of [appKey, nwkKey]) {
    if (e !== undefined && !(await deps.custody.hasKek(e.kekLabel))) {
      throw new ProvisioningError('KEK_NOT_FOUND', `no KEK labelled "${e.kekLabel}"; add it first with \`joinkeep kek add --label ${e.kekLabel} --key-file FILE\``);
    }
  }
  if (await deps.storage.getDevice(fields.devEui)) throw new ProvisioningError('DEVICE_EXISTS', `device ${fields.devEui} already exists`);

  const importId = randomBytes(4).toString('hex');
  const imported: string[] = [];
  try {
    const appKeyHandle = rootKeyHandle(fields.devEui, 'AppKey', importId);
    await importRoot(deps.custody, appKeyHandle, appKey, '--app-key');
    imported.push(appKeyHandle);
    let nwkKeyHandle: string | null = null;
    if (nwkKey !== undefined) {
      nwkKeyHandle = rootKeyHandle(fields.devEui, 'NwkKey', importId);
      await importRoot(deps.custody, nwkKeyHandle, nwkKey, '--nwk-key');
      imported.push(nwkKeyHandle);
    }
    const device: DeviceRecord = { ...fields, appKeyHandle, nwkKeyHandle, createdAt: new Date() };
    await deps.storage.insertDevice(device);
    await deps.audit.appendAudit({
      at: device.createdAt,
      actor: deps.actor,
      action: 'device.add',
      subject: `device/${device.devEui}`,
      outcome: 'success',
      details: { joinEui: device.joinEui, macVersion: device.macVersion, homeNetId: device.homeNetId, asId: device.asId, keyHandles: imported },
    });
    return device;
  } catch (error) {
    for (const handle of imported) await deps.custody.deleteKey(handle).catch(() => undefined);
    throw error;
  }
}

async function importRoot(custody: KeyCustody, handle: string, e: { kekLabel: string; aesKey: Buffer }, option: string): Promise<void> {
  try {
    await custody.importWrapped(handle, 'root', e.aesKey, e.kekLabel);
  } catch (error) {
    if (error instanceof CustodyError && (error.code === 'UNWRAP_FAILED' || error.code === 'INVALID_KEY')) {
      throw new ProvisioningError('UNWRAP_FAILED', `${option}: ${error.message}`);
    }
    throw error;
  }
}

function envelope(value: unknown, option: string): { kekLabel: string; aesKey: Buffer } {
  let parsed: unknown = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch {
      throw new ProvisioningError('INVALID_INPUT', `${option} must be a TS002 KeyEnvelope JSON object like {"KEKLabel":"…","AESKey":"…"}`);
    }
  }
  try {
    const e = parseKeyEnvelope(parsed, option);
    // Every root key enters wrapped (DESIGN "Decisions"): a clear envelope is refused, not stored.
    if (e.kekLabel === null) {
      throw new ProvisioningError('CLEAR_KEY_REFUSED', `${option} has an empty KEKLabel: root keys are accepted only wrapped (RFC 3394) under a KEK added with \`joinkeep kek add\``);
    }
    if (e.aesKey.length !== 24) throw new ProvisioningError('INVALID_INPUT', `${option}.AESKey must be the 24-byte RFC 3394 wrap of a 16-byte key, got ${e.aesKey.length} bytes`);
    return { kekLabel: e.kekLabel, aesKey: e.aesKey };
  } catch (error) {
    if (error instanceof ProtocolError) throw new ProvisioningError('INVALID_INPUT', error.message);
    throw error;
  }
}

function validate(input: AddDeviceInput): Omit<DeviceRecord, 'appKeyHandle' | 'nwkKeyHandle' | 'createdAt'> {
  try {
    const asId = input.asId?.trim();
    return {
      devEui: eui64FromBeHex(input.devEui, '--dev-eui') as Eui64,
      joinEui: eui64FromBeHex(input.joinEui, '--join-eui') as Eui64,
      macVersion: parseMacVersion(input.macVersion, '--mac-version') as MacVersion,
      homeNetId: netIdFromBeHex(input.homeNetId, '--home-net-id') as NetId,
      homeNsId: input.homeNsId === undefined ? null : eui64FromBeHex(input.homeNsId, '--home-ns-id'),
      asId: asId === undefined || asId === '' ? null : asId,
      roamingNetIds: input.roamingNetIds === undefined ? null : input.roamingNetIds.map((n) => netIdFromBeHex(n, '--roaming-net-ids')),
    };
  } catch (error) {
    if (error instanceof ProtocolError) throw new ProvisioningError('INVALID_INPUT', error.message);
    throw error;
  }
}
