import { randomFillSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { type Eui64, type MacVersion, ProtocolError, eui64FromBeHex, parseHex, parseMacVersion } from '../../protocol/index.js';
import { ProvisioningError } from '../errors.js';
import { CsvSyntaxError, parseCsv } from '../../protocol/csv.js';
import { MAX_DEVICES } from './schema.js';

/*
 * The factory's programming output, as the maker tool reads it: CSV (a header row, then one device per row) or
 * JSON (an array of objects), columns devEui, joinEui, macVersion, appKey, nwkKey, serialNumber, profile. Column
 * names are matched loosely (DevEUI, dev_eui, "Dev EUI"; AppEUI for JoinEUI) because every factory spells them
 * differently. Or: N fresh devices with random keys, for when the keys are born in the maker tool.
 */

export interface FactoryDevice {
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly macVersion: MacVersion;
  readonly appKey?: Buffer;
  readonly nwkKey?: Buffer;
  readonly serialNumber?: string;
  readonly profile?: string;
  /** Where the device came from, for messages: "line 7" or "item 3". */
  readonly source: string;
}

export interface FactoryInput {
  readonly devices: FactoryDevice[];
  /** Columns or properties that were not recognised and were ignored. */
  readonly ignoredColumns: string[];
}

export interface FactoryInputOptions {
  /** 'required': every device has an AppKey (and a NwkKey if 1.1); 'forbidden': none may have keys (kind derived). */
  readonly keys: 'required' | 'forbidden';
  /** Used when a device has no macVersion. */
  readonly defaultMacVersion?: string;
  /** Used when a device has no profile. */
  readonly defaultProfile?: string;
}

type Field = 'devEui' | 'joinEui' | 'macVersion' | 'appKey' | 'nwkKey' | 'serialNumber' | 'profile';

/** Normalised column name (lower case, letters and digits only) → field. */
const COLUMN_ALIASES: Record<string, Field> = {
  deveui: 'devEui',
  joineui: 'joinEui',
  appeui: 'joinEui', // LoRaWAN 1.0.x name of the JoinEUI
  macversion: 'macVersion',
  lorawanversion: 'macVersion',
  lorawanmacversion: 'macVersion',
  appkey: 'appKey',
  nwkkey: 'nwkKey',
  serialnumber: 'serialNumber',
  serial: 'serialNumber',
  profile: 'profile',
  deviceprofile: 'profile',
};

const TEXT = /^[^\u0000-\u001F\u007F]{1,64}$/;

export async function readFactoryInput(path: string, options: FactoryInputOptions): Promise<FactoryInput> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ProvisioningError('INVALID_INPUT', `${path} cannot be read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  // JSON starts with "[" (after a BOM or blanks); anything else is read as CSV.
  return /^\uFEFF?\s*\[/.test(text) ? parseFactoryJson(text, options, path) : parseFactoryCsv(text, options, path);
}

export function parseFactoryCsv(text: string, options: FactoryInputOptions, name = 'the CSV input'): FactoryInput {
  let records;
  try {
    records = parseCsv(text);
  } catch (error) {
    if (error instanceof CsvSyntaxError) throw new ProvisioningError('INVALID_INPUT', `${name} line ${error.line}: ${error.message}`);
    throw error;
  }
  const [header, ...rows] = records;
  if (header === undefined) throw new ProvisioningError('INVALID_INPUT', `${name} is empty: expected a header row (devEui, joinEui, macVersion, appKey, …) and one row per device`);
  const { columns, ignored } = mapColumns(header.fields, `${name} line ${header.line}`);
  const rowsAsObjects = rows.map((r) => {
    if (r.fields.length > header.fields.length) throw new ProvisioningError('INVALID_INPUT', `${name} line ${r.line}: ${r.fields.length} fields, but the header has ${header.fields.length}`);
    const values: Partial<Record<Field, string>> = {};
    columns.forEach((field, i) => {
      if (field !== undefined && r.fields[i] !== undefined && r.fields[i] !== '') values[field] = r.fields[i];
    });
    return { values, source: `line ${r.line}` };
  });
  return { devices: toDevices(rowsAsObjects, options, name), ignoredColumns: ignored };
}

export function parseFactoryJson(text: string, options: FactoryInputOptions, name = 'the JSON input'): FactoryInput {
  let items: unknown;
  try {
    items = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw new ProvisioningError('INVALID_INPUT', `${name} is not valid JSON${jsonErrorLine(text, error)}: ${(error as Error).message}`);
  }
  if (!Array.isArray(items)) throw new ProvisioningError('INVALID_INPUT', `${name} must be a JSON array of devices`);
  const ignored = new Set<string>();
  const objects = items.map((item: unknown, i) => {
    const where = `${name} item ${i}`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw new ProvisioningError('INVALID_INPUT', `${where}: expected an object`);
    const keys = Object.keys(item);
    const { columns, ignored: unknown } = mapColumns(keys, where);
    unknown.forEach((k) => ignored.add(k));
    const values: Partial<Record<Field, string>> = {};
    columns.forEach((field, j) => {
      const v = (item as Record<string, unknown>)[keys[j] ?? ''];
      if (field === undefined || v === undefined || v === null || v === '') return;
      // Serial numbers are often written as numbers; anything else must be a string.
      if (typeof v === 'number' && field === 'serialNumber') values[field] = String(v);
      else if (typeof v === 'string') values[field] = v;
      else throw new ProvisioningError('INVALID_INPUT', `${where}: ${keys[j]} must be a string`);
    });
    return { values, source: `item ${i}` };
  });
  return { devices: toDevices(objects, options, name), ignoredColumns: [...ignored] };
}

export interface GenerateOptions {
  readonly count: number;
  readonly devEuiStart: string;
  readonly joinEui: string;
  readonly macVersion: string;
  readonly profile?: string;
  /** false: identities only (kind derived, whose keys are derived from a master key). Default true. */
  readonly withKeys?: boolean;
}

/** `count` devices with consecutive DevEUIs from `devEuiStart` and fresh random root keys. */
export function generateDevices(o: GenerateOptions): FactoryDevice[] {
  if (!Number.isInteger(o.count) || o.count < 1 || o.count > MAX_DEVICES) throw new ProvisioningError('INVALID_INPUT', `the device count must be 1 to ${MAX_DEVICES}, not ${o.count}`);
  const start = BigInt(`0x${inputEui(o.devEuiStart, 'the first DevEUI')}`);
  if (start + BigInt(o.count - 1) > 0xffffffffffffffffn) throw new ProvisioningError('INVALID_INPUT', `${o.count} DevEUIs from ${o.devEuiStart} run past FFFFFFFFFFFFFFFF`);
  const joinEui = inputEui(o.joinEui, 'the JoinEUI');
  const macVersion = inputMacVersion(o.macVersion, 'the LoRaWAN version');
  const profile = o.profile === undefined ? undefined : inputText(o.profile, 'the profile');
  const perDevice = o.withKeys === false ? 0 : macVersion === '1.1' ? 32 : 16;
  // One allocation for every key, which the caller can wipe once the programmer file is written.
  const keys = randomFillSync(Buffer.alloc(o.count * perDevice));
  return Array.from({ length: o.count }, (_, i) => {
    const at = i * perDevice;
    return {
      devEui: (start + BigInt(i)).toString(16).toUpperCase().padStart(16, '0') as Eui64,
      joinEui,
      macVersion,
      ...(perDevice === 0 ? {} : { appKey: keys.subarray(at, at + 16) }),
      ...(perDevice === 32 ? { nwkKey: keys.subarray(at + 16, at + 32) } : {}),
      ...(profile === undefined ? {} : { profile }),
      source: `generated device ${i}`,
    };
  });
}

/** Overwrites every key of `devices` with zeros (the Buffers only; hex copies in strings cannot be wiped). */
export function wipeKeys(devices: readonly FactoryDevice[]): void {
  for (const d of devices) {
    d.appKey?.fill(0);
    d.nwkKey?.fill(0);
  }
}

function mapColumns(names: readonly string[], where: string): { columns: (Field | undefined)[]; ignored: string[] } {
  const seen = new Map<Field, string>();
  const ignored: string[] = [];
  const columns = names.map((name) => {
    const field = COLUMN_ALIASES[name.toLowerCase().replace(/[^a-z0-9]/g, '')];
    if (field === undefined) {
      if (name !== '') ignored.push(name);
      return undefined;
    }
    const other = seen.get(field);
    if (other !== undefined) throw new ProvisioningError('INVALID_INPUT', `${where}: "${other}" and "${name}" are both ${field}`);
    seen.set(field, name);
    return field;
  });
  return { columns, ignored };
}

function toDevices(rows: readonly { values: Partial<Record<Field, string>>; source: string }[], options: FactoryInputOptions, name: string): FactoryDevice[] {
  if (rows.length === 0) throw new ProvisioningError('INVALID_INPUT', `${name} lists no devices`);
  if (rows.length > MAX_DEVICES) throw new ProvisioningError('INVALID_INPUT', `${name} lists ${rows.length} devices; a batch holds at most ${MAX_DEVICES}`);
  const seen = new Map<string, string>();
  return rows.map(({ values: v, source }) => {
    const where = `${name} ${source}`;
    for (const field of ['devEui', 'joinEui'] as const) if (v[field] === undefined) throw new ProvisioningError('INVALID_INPUT', `${where}: ${field} is missing`);
    const devEui = inputEui(v.devEui ?? '', `${where}: devEui`);
    const first = seen.get(devEui);
    if (first !== undefined) throw new ProvisioningError('INVALID_INPUT', `${where}: DevEUI ${devEui} is already on ${first}`);
    seen.set(devEui, source);
    const versionText = v.macVersion ?? options.defaultMacVersion;
    if (versionText === undefined) throw new ProvisioningError('INVALID_INPUT', `${where}: macVersion is missing (add the column, or give a default LoRaWAN version)`);
    const macVersion = inputMacVersion(versionText, `${where}: macVersion`);
    const profile = v.profile ?? options.defaultProfile;
    return {
      devEui,
      joinEui: inputEui(v.joinEui ?? '', `${where}: joinEui`),
      macVersion,
      ...keysOf(v, macVersion, options.keys, where, devEui),
      ...(v.serialNumber === undefined ? {} : { serialNumber: inputText(v.serialNumber, `${where}: serialNumber`) }),
      ...(profile === undefined ? {} : { profile: inputText(profile, `${where}: profile`) }),
      source,
    };
  });
}

function keysOf(v: Partial<Record<Field, string>>, macVersion: MacVersion, rule: FactoryInputOptions['keys'], where: string, devEui: string): { appKey?: Buffer; nwkKey?: Buffer } {
  if (rule === 'forbidden') {
    if (v.appKey !== undefined || v.nwkKey !== undefined) throw new ProvisioningError('INVALID_INPUT', `${where}: has a key, but this batch kind derives keys and carries none (remove the appKey/nwkKey columns)`);
    return {};
  }
  if (v.appKey === undefined) throw new ProvisioningError('INVALID_INPUT', `${where}: appKey is missing for ${devEui}`);
  // LoRaWAN 1.1 §6.1.1: 1.1 devices have AppKey and NwkKey; 1.0.x devices have one root key, the AppKey.
  if (macVersion === '1.1' && v.nwkKey === undefined) throw new ProvisioningError('INVALID_INPUT', `${where}: nwkKey is missing for ${devEui}, a LoRaWAN 1.1 device`);
  if (macVersion !== '1.1' && v.nwkKey !== undefined) throw new ProvisioningError('INVALID_INPUT', `${where}: ${devEui} is a LoRaWAN ${macVersion} device and has only an AppKey; leave nwkKey empty`);
  return {
    appKey: inputKey(v.appKey, `${where}: appKey`),
    ...(v.nwkKey === undefined ? {} : { nwkKey: inputKey(v.nwkKey, `${where}: nwkKey`) }),
  };
}

function inputEui(text: string, what: string): Eui64 {
  // Factories print EUIs with separators too: 70-B3-D5-…, 70:B3:D5:…, "70B3 D57E …".
  return protocolInput(() => eui64FromBeHex(text.replace(/[-:\s]/g, ''), what));
}

function inputKey(text: string, what: string): Buffer {
  // Never echo the value: it is a key.
  const key = protocolInput(() => parseHex(text.replace(/\s/g, ''), what, 16));
  if (key.every((b) => b === 0)) throw new ProvisioningError('INVALID_INPUT', `${what} is all zeros (a placeholder, not a key)`);
  return key;
}

function inputMacVersion(text: string, what: string): MacVersion {
  return protocolInput(() => parseMacVersion(text, what));
}

function inputText(text: string, what: string): string {
  if (!TEXT.test(text)) throw new ProvisioningError('INVALID_INPUT', `${what} must be 1 to 64 characters without control characters`);
  return text;
}

function protocolInput<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof ProtocolError) throw new ProvisioningError('INVALID_INPUT', error.message);
    throw error;
  }
}

/** " (line N)" from a JSON.parse error's "position P", when Node gives one. */
function jsonErrorLine(text: string, error: unknown): string {
  const m = /position (\d+)/.exec((error as Error).message);
  if (!m) return '';
  return ` (line ${text.slice(0, Number(m[1])).split('\n').length})`;
}
