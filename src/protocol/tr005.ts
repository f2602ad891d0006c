import { type Eui64, eui64FromBeHex } from './eui64.js';
import { ProtocolError } from './errors.js';

/*
 * LoRa Alliance TR005 device identification QR codes (spec-notes §8.1):
 *   LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>[:O<OwnerToken>][:S<SerNum>][:P<Proprietary>][:C<CheckSum>]
 * ProfileID = VendorID (2 bytes) ‖ VendorProfileID (2 bytes). Extensions are one letter and a value, in any order;
 * empty ones are ignored. CheckSum is CRC-16/MODBUS over everything but the ":C…" field, so we always write it last.
 *
 * Devices made before TR005 was published still carry two of its drafts (as The Things Stack reads them,
 * pkg/qrcode/lora_alliance_tr005d2.go and …d3.go):
 *   draft 2  URN:LW:DP:<JoinEUI>:<DevEUI>:<ProfileID>[:%V<code>%S<serial>%P<proprietary>]   ("%25" stands for "%")
 *   draft 3  URN:DEV:LW:<JoinEUI>_<DevEUI>_<ProfileID>[_V<code>_S<serial>_P<proprietary>]
 * Their V ("device validation code") is what TR005 renamed the OwnerToken. Neither draft has a checksum.
 */

export interface Tr005Fields {
  readonly joinEui: Eui64;
  readonly devEui: Eui64;
  /** 8 hex digits; 00000000 when the vendor has no LoRa Alliance VendorID. */
  readonly profileId: string;
  /** The claim code (TR005 OwnerToken; the drafts' V extension). A secret: never log it. */
  readonly ownerToken?: string;
  readonly serialNumber?: string;
  readonly proprietary?: string;
}

export interface Tr005Input {
  readonly joinEui: Eui64 | string;
  readonly devEui: Eui64 | string;
  readonly profileId?: string;
  readonly ownerToken?: string;
  readonly serialNumber?: string;
  readonly proprietary?: string;
}

export interface ParsedTr005 extends Tr005Fields {
  /** True when the code carried a checksum, which was then verified (a wrong one is refused); TR005 makes it optional. */
  readonly checksummed: boolean;
}

/** Which layout a scanned device QR code used. */
export const deviceQrFormats = ['tr005', 'tr005-draft2', 'tr005-draft3'] as const;
export type DeviceQrFormat = (typeof deviceQrFormats)[number];

export interface DeviceQr extends ParsedTr005 {
  readonly format: DeviceQrFormat;
}

/** Far above any real label (a version-10 QR code holds 174 alphanumeric characters at level M). */
export const DEVICE_QR_MAX_LENGTH = 1024;

/** Printable ASCII without ':' (the field separator) and without space, which QR readers and shells mangle. */
const EXTENSION_VALUE = /^[\x21-\x39\x3b-\x7e]+$/;

/** True when `value` can be written as a TR005 extension value. */
export function isTr005Value(value: string): boolean {
  return EXTENSION_VALUE.test(value);
}

/** CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF, no final XOR). */
export function crc16Modbus(bytes: Uint8Array): number {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}

/** The standard TR005 string (`LW:D0:…`), its checksum written last. */
export function formatTr005(input: Tr005Input): string {
  const parts = ['LW', 'D0', eui64FromBeHex(input.joinEui, 'JoinEUI'), eui64FromBeHex(input.devEui, 'DevEUI'), hexField(input.profileId ?? '00000000', 'ProfileID', 4)];
  const extensions: [string, string | undefined, string][] = [
    ['O', input.ownerToken, 'OwnerToken'],
    ['S', input.serialNumber, 'SerNum'],
    ['P', input.proprietary, 'Proprietary'],
  ];
  for (const [letter, value, field] of extensions) {
    if (value === undefined || value === '') continue;
    if (!isTr005Value(value)) throw new ProtocolError('INVALID_FIELD', `TR005 ${field} must be printable ASCII without ':' or spaces`, field);
    parts.push(`${letter}${value}`);
  }
  const body = parts.join(':');
  // TR005: the checksum covers the content without its own field, so writing it last keeps the rule simple for readers.
  return `${body}:C${checksumText(body)}`;
}

/** Parses the standard `LW:D0:` form only; see parseDeviceQr for the drafts. */
export function parseTr005(text: unknown): ParsedTr005 {
  const { format: _format, ...fields } = parseStandard(inputText(text));
  return fields;
}

/**
 * Parses what a scanner read from a device label: TR005 (`LW:D0:`, checksum verified when present) or one of the
 * drafts still printed on devices (`URN:LW:DP:`, `URN:DEV:LW:`). Throws a ProtocolError naming the field at fault;
 * messages never repeat the input, since it holds the claim code.
 */
export function parseDeviceQr(text: unknown): DeviceQr {
  const code = inputText(text);
  if (code.startsWith('LW:')) return parseStandard(code);
  if (code.startsWith('URN:LW:DP:')) return parseDraft2(code);
  if (code.startsWith('URN:DEV:LW:')) return parseDraft3(code);
  if (/^[0-9A-Fa-f]{16}$/.test(code)) {
    throw new ProtocolError('INVALID_FIELD', 'this QR code holds only a DevEUI, no claim code: enter the DevEUI and the claim code printed on the device instead', 'TR005');
  }
  throw new ProtocolError('INVALID_FIELD', 'not a LoRaWAN device QR code: expected LW:D0: (TR005) or the older URN:LW:DP: or URN:DEV:LW: drafts', 'TR005');
}

function inputText(text: unknown): string {
  if (typeof text !== 'string') throw new ProtocolError('INVALID_FIELD', 'a device QR code must be a string', 'TR005');
  if (text.length > DEVICE_QR_MAX_LENGTH) throw new ProtocolError('INVALID_LENGTH', `a device QR code is at most ${DEVICE_QR_MAX_LENGTH} characters, got ${text.length}`, 'TR005');
  // Scanners in keyboard mode often add a line break.
  return text.trim();
}

function parseStandard(code: string): DeviceQr {
  const fields = code.split(':');
  const [lw, d0, joinEui, devEui, profileId] = fields;
  if (lw !== 'LW') throw new ProtocolError('INVALID_FIELD', 'a TR005 code starts with LW:D0:', 'TR005');
  // D0 is the only schema TR005 defines; a later one may lay fields out differently, so it is not guessed at.
  if (d0 !== 'D0') throw new ProtocolError('INVALID_FIELD', `TR005 schema ${JSON.stringify(d0 ?? '')} is not supported (only D0)`, 'TR005');
  if (fields.length < 5) throw new ProtocolError('MISSING_FIELD', 'a TR005 code needs JoinEUI, DevEUI and ProfileID after LW:D0:', 'TR005');
  const out: { ownerToken?: string; serialNumber?: string; proprietary?: string } = {};
  const seen = new Set<string>();
  let checksum: string | undefined;
  let covered = '';
  fields.slice(5).forEach((field, i) => {
    if (field === '') return; // TR005: empty extensions are ignored
    const letter = field[0]!;
    const value = field.slice(1);
    if ('OSPC'.includes(letter)) {
      // Two OwnerTokens (or checksums) would leave it to us which one the maker meant.
      if (seen.has(letter)) throw new ProtocolError('INVALID_FIELD', `TR005 extension ${letter} appears twice`, 'TR005');
      seen.add(letter);
    }
    if (value === '' && letter !== 'C') return; // "O" with no value: no OwnerToken (TTS writes such codes in its tests)
    switch (letter) {
      case 'O': out.ownerToken = value; break;
      case 'S': out.serialNumber = value; break;
      case 'P': out.proprietary = value; break;
      case 'C':
        checksum = value;
        // The whole content except this field and its leading colon (spec-notes §8.1), wherever it stands.
        covered = fields.filter((_, j) => j !== 5 + i).join(':');
        break;
      default: break; // unknown extensions: later TR005 revisions may add letters
    }
  });
  if (checksum !== undefined) {
    if (!/^[0-9A-Fa-f]{1,4}$/.test(checksum)) throw new ProtocolError('INVALID_HEX', 'the TR005 checksum must be 1 to 4 hex digits (CRC-16)', 'CheckSum');
    if (parseInt(checksum, 16) !== crc16Modbus(Buffer.from(covered, 'utf8'))) {
      throw new ProtocolError('INVALID_FIELD', `TR005 checksum ${checksum} does not match the content (expected ${checksumText(covered)}): the code was misread or altered`, 'CheckSum');
    }
  }
  return {
    format: 'tr005',
    ...identifiers(joinEui, devEui, profileId),
    ...out,
    checksummed: checksum !== undefined,
  };
}

/** Draft 2: `URN:LW:DP:<JoinEUI>:<DevEUI>:<ProfileID>[:<%-separated extensions>]`. */
function parseDraft2(code: string): DeviceQr {
  const fields = code.split(':');
  if (fields.length < 6) throw new ProtocolError('MISSING_FIELD', 'a URN:LW:DP: code needs JoinEUI, DevEUI and ProfileID', 'TR005');
  if (fields.length > 7) throw new ProtocolError('INVALID_FIELD', 'a URN:LW:DP: code has at most one field after the ProfileID (its extensions)', 'TR005');
  // "%25" is a percent-encoded "%" (seen on printed codes); it then separates extensions like a plain "%".
  const extensions = (fields[6] ?? '').replaceAll('%25', '%').split('%');
  return { format: 'tr005-draft2', ...identifiers(fields[3], fields[4], fields[5]), ...draftExtensions(extensions, DRAFT2_VALUE, 'the QR alphanumeric characters 0-9 A-Z $ * + - . /'), checksummed: false };
}

/** Draft 3: `URN:DEV:LW:<JoinEUI>_<DevEUI>_<ProfileID>[_V…][_S…][_P…]`. */
function parseDraft3(code: string): DeviceQr {
  const fields = code.slice('URN:DEV:LW:'.length).split('_');
  if (fields.length < 3) throw new ProtocolError('MISSING_FIELD', 'a URN:DEV:LW: code needs JoinEUI_DevEUI_ProfileID', 'TR005');
  return { format: 'tr005-draft3', ...identifiers(fields[0], fields[1], fields[2]), ...draftExtensions(fields.slice(3), DRAFT3_VALUE, 'digits and upper-case letters'), checksummed: false };
}

/** Draft 2 allows QR alphanumeric-mode characters except the separators ':' and '%' and space. */
const DRAFT2_VALUE = /^[0-9A-Z$*+\-./]*$/;
/** Draft 3 allows digits and upper-case letters only ('_' separates). */
const DRAFT3_VALUE = /^[0-9A-Z]*$/;

function draftExtensions(extensions: readonly string[], allowed: RegExp, allowedText: string): Pick<Tr005Fields, 'ownerToken' | 'serialNumber' | 'proprietary'> {
  const out: { ownerToken?: string; serialNumber?: string; proprietary?: string } = {};
  const seen = new Set<string>();
  for (const ext of extensions) {
    if (ext === '') continue;
    const letter = ext[0]!;
    const value = ext.slice(1);
    const field = letter === 'V' ? 'OwnerToken' : letter === 'S' ? 'SerNum' : letter === 'P' ? 'Proprietary' : undefined;
    if (field === undefined) continue; // unknown letters are skipped, as for TR005
    if (!allowed.test(value)) throw new ProtocolError('INVALID_FIELD', `the ${field} of this draft QR code may hold only ${allowedText}`, field);
    if (seen.has(letter)) throw new ProtocolError('INVALID_FIELD', `extension ${letter} appears twice`, 'TR005');
    seen.add(letter);
    if (value === '') continue; // "%V" with nothing after it: no code
    if (letter === 'V') out.ownerToken = value;
    else if (letter === 'S') out.serialNumber = value;
    else out.proprietary = value;
  }
  return out;
}

function identifiers(joinEui: string | undefined, devEui: string | undefined, profileId: string | undefined): Pick<Tr005Fields, 'joinEui' | 'devEui' | 'profileId'> {
  return {
    joinEui: hexField(joinEui, 'JoinEUI', 8) as Eui64,
    devEui: hexField(devEui, 'DevEUI', 8) as Eui64,
    profileId: hexField(profileId, 'ProfileID', 4),
  };
}

/** Exactly `bytes` bytes of hex, any case, no `0x` (TR005 prints bare hex digits); canonical upper case out. */
function hexField(text: string | undefined, field: string, bytes: number): string {
  if (text === undefined || text === '') throw new ProtocolError('MISSING_FIELD', `the ${field} is missing`, field);
  if (!/^[0-9A-Fa-f]+$/.test(text)) throw new ProtocolError('INVALID_HEX', `the ${field} must be hex digits (0-9, A-F)`, field);
  if (text.length !== bytes * 2) throw new ProtocolError('INVALID_LENGTH', `the ${field} must be ${bytes * 2} hex digits, got ${text.length}`, field);
  return text.toUpperCase();
}

function checksumText(body: string): string {
  return crc16Modbus(Buffer.from(body, 'utf8')).toString(16).toUpperCase().padStart(4, '0');
}
