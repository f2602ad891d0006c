import { CsvSyntaxError, type DeviceQr, type Eui64, ProtocolError, eui64FromBeHex, formatTr005, isTr005Value, parseCsv, parseDeviceQr } from '../protocol/index.js';
import { CommissioningError } from './errors.js';

/*
 * A maker's key-free manifest, as `joinkeep batch seal` writes it (src/provisioning/sealed-batch/outputs.ts):
 * CSV with the columns devEui, joinEui, macVersion, serialNumber, profile, claimCode, qr, or JSON
 * `{ batchId, kind, maker, createdAt, deviceCount, devices: [ { devEui, … } ] }`. A buyer uses it to claim every
 * device at once and a maker to print labels. Unknown columns are ignored (a spreadsheet may add some); every
 * error names the row (CSV line or JSON index) and never repeats a claim code.
 */

export interface ManifestEntry {
  /** "line 3" (CSV) or "devices[1]" (JSON), for messages. */
  readonly row: string;
  readonly devEui: Eui64;
  readonly joinEui?: Eui64;
  readonly serialNumber?: string;
  /** As printed (e.g. ABCD-EFGH-JKMN-PQRS): the claimCode column, else the QR code's OwnerToken. */
  readonly claimCode?: string;
  /** The device's QR code content: the qr column, else TR005 built from joinEui, devEui and the claim code. */
  readonly qr?: string;
}

export interface Manifest {
  readonly batchId?: string;
  readonly maker?: string;
  readonly entries: readonly ManifestEntry[];
}

/** What the bulk claim needs per device. */
export interface ClaimItem {
  readonly devEui: Eui64;
  readonly claimCode: string;
}

/** Reads a manifest: JSON when the text starts with "{" or "[" (after a BOM or blanks), CSV otherwise. */
export function parseManifest(text: string, name = 'the manifest'): Manifest {
  return /^\uFEFF?\s*[{[]/.test(text) ? parseManifestJson(text, name) : parseManifestCsv(text, name);
}

/** The claim items of a manifest; every device must have a claim code. */
export function manifestClaimItems(manifest: Manifest, name = 'the manifest'): ClaimItem[] {
  return manifest.entries.map((e) => {
    if (e.claimCode === undefined) throw invalid(`${name} ${e.row} (DevEUI ${e.devEui}): no claim code (neither a claimCode column nor an OwnerToken in the qr column)`);
    return { devEui: e.devEui, claimCode: e.claimCode };
  });
}

/** Parses a manifest and returns its claim items: what the bulk-claim service takes. */
export function parseClaimManifest(text: string, name = 'the manifest'): ClaimItem[] {
  return manifestClaimItems(parseManifest(text, name), name);
}

type Row = Partial<Record<'devEui' | 'joinEui' | 'serialNumber' | 'claimCode' | 'qr', unknown>>;
const COLUMNS = ['devEui', 'joinEui', 'serialNumber', 'claimCode', 'qr'] as const;

function parseManifestCsv(text: string, name: string): Manifest {
  let records;
  try {
    records = parseCsv(text);
  } catch (error) {
    if (error instanceof CsvSyntaxError) throw invalid(`${name} line ${error.line}: ${error.message}`);
    throw error;
  }
  const [header, ...rows] = records;
  if (header === undefined) throw invalid(`${name} is empty: expected a header row (devEui, …, claimCode, qr) and one row per device`);
  // Column names as the maker tool writes them; matched without regard to case, since spreadsheets re-case headers.
  const index = new Map(header.fields.map((f, i) => [f.toLowerCase(), i]));
  if (!index.has('deveui') && !index.has('qr')) throw invalid(`${name} line ${header.line}: the header has neither a devEui nor a qr column`);
  const entries = rows.map((r) => {
    const row = `line ${r.line}`;
    if (r.fields.length > header.fields.length) throw invalid(`${name} ${row}: ${r.fields.length} fields, but the header has ${header.fields.length}`);
    const values: Row = {};
    for (const c of COLUMNS) {
      const v = r.fields[index.get(c.toLowerCase()) ?? -1];
      if (v !== undefined && v !== '') values[c] = v;
    }
    return entry(values, row, name);
  });
  return { entries: unique(entries, name) };
}

function parseManifestJson(text: string, name: string): Manifest {
  let doc: unknown;
  try {
    doc = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw invalid(`${name} is not valid JSON: ${(error as Error).message}`);
  }
  // The maker tool writes an object with a header; a bare array of devices is accepted too.
  const header = Array.isArray(doc) ? {} : isObject(doc) ? doc : undefined;
  const devices = Array.isArray(doc) ? doc : header?.['devices'];
  if (header === undefined || !Array.isArray(devices)) throw invalid(`${name}: expected an object with a "devices" array (as \`joinkeep batch seal\` writes it) or an array of devices`);
  const count = header['deviceCount'];
  if (count !== undefined && count !== devices.length) throw invalid(`${name}: deviceCount says ${String(count)} but "devices" has ${devices.length} (truncated or edited file?)`);
  const entries = devices.map((d: unknown, i) => {
    const row = `devices[${i}]`;
    if (!isObject(d)) throw invalid(`${name} ${row}: expected an object`);
    return entry(d as Row, row, name);
  });
  return {
    ...(typeof header['batchId'] === 'string' ? { batchId: header['batchId'] } : {}),
    ...(typeof header['maker'] === 'string' ? { maker: header['maker'] } : {}),
    entries: unique(entries, name),
  };
}

function entry(values: Row, row: string, name: string): ManifestEntry {
  const where = (devEui?: string) => `${name} ${row}${devEui === undefined ? '' : ` (DevEUI ${devEui})`}`;
  for (const c of COLUMNS) {
    if (values[c] !== undefined && typeof values[c] !== 'string') throw invalid(`${where()}: ${c} must be a string`);
  }
  const text = values as Partial<Record<(typeof COLUMNS)[number], string>>;
  let qr: DeviceQr | undefined;
  if (text.qr !== undefined) {
    try {
      qr = parseDeviceQr(text.qr);
    } catch (error) {
      if (error instanceof ProtocolError) throw invalid(`${where(text.devEui)}: the qr column is not a device QR code: ${error.message}`);
      throw error;
    }
  }
  const devEui = eui(text.devEui, 'devEui', where) ?? qr?.devEui;
  if (devEui === undefined) throw invalid(`${where()}: no DevEUI (neither a devEui nor a qr column)`);
  const joinEui = eui(text.joinEui, 'joinEui', () => where(devEui)) ?? qr?.joinEui;
  if (qr !== undefined && qr.devEui !== devEui) throw invalid(`${where(devEui)}: the qr column is for DevEUI ${qr.devEui}`);
  if (qr !== undefined && joinEui !== undefined && qr.joinEui !== joinEui) throw invalid(`${where(devEui)}: the qr column has JoinEUI ${qr.joinEui}, the joinEui column ${joinEui}`);
  const claimCode = text.claimCode ?? qr?.ownerToken;
  // outputs.ts writes the normalised claim code as the OwnerToken: both must be the same code.
  if (text.claimCode !== undefined && qr?.ownerToken !== undefined && comparable(text.claimCode) !== comparable(qr.ownerToken)) {
    throw invalid(`${where(devEui)}: the claimCode column and the OwnerToken of the qr column differ`);
  }
  const serialNumber = text.serialNumber ?? qr?.serialNumber;
  return {
    row,
    devEui,
    ...(joinEui === undefined ? {} : { joinEui }),
    ...(serialNumber === undefined ? {} : { serialNumber }),
    ...(claimCode === undefined ? {} : { claimCode }),
    ...(text.qr !== undefined ? { qr: text.qr.trim() } : joinEui !== undefined && claimCode !== undefined ? { qr: tr005Of(joinEui, devEui, claimCode, serialNumber) } : {}),
  };
}

/** Builds the QR content a maker tool would have written, for a manifest that has no qr column. */
function tr005Of(joinEui: Eui64, devEui: Eui64, claimCode: string, serialNumber: string | undefined): string {
  return formatTr005({ joinEui, devEui, ownerToken: comparable(claimCode), ...(serialNumber !== undefined && isTr005Value(serialNumber) ? { serialNumber } : {}) });
}

/**
 * The printed and the QR form of a claim code compared as the claim compares them (normalizeClaimCode in
 * provisioning, which this layer may not import): upper case, no dashes or spaces, Crockford's O → 0 and I, L → 1.
 */
function comparable(code: string): string {
  return code.toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1');
}

function eui(text: string | undefined, column: string, where: () => string): Eui64 | undefined {
  if (text === undefined) return undefined;
  try {
    return eui64FromBeHex(text, column);
  } catch (error) {
    if (error instanceof ProtocolError) throw invalid(`${where()}: ${column} is not an EUI-64 (16 hex digits)`);
    throw error;
  }
}

function unique(entries: ManifestEntry[], name: string): ManifestEntry[] {
  const first = new Map<string, string>();
  for (const e of entries) {
    const seen = first.get(e.devEui);
    if (seen !== undefined) throw invalid(`${name} ${e.row}: DevEUI ${e.devEui} is already listed at ${seen}`);
    first.set(e.devEui, e.row);
  }
  return entries;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(message: string): CommissioningError {
  return new CommissioningError('INVALID_INPUT', message);
}
