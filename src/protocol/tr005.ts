import { type Eui64, eui64FromBeHex } from './eui64.js';
import { ProtocolError } from './errors.js';
import { parseHex, toHex } from './hex.js';

/*
 * LoRa Alliance TR005 device identification QR code (spec-notes §8.1):
 *   LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>[:O<OwnerToken>][:S<SerNum>][:P<Proprietary>][:C<CheckSum>]
 * ProfileID = VendorID (2 bytes) ‖ VendorProfileID (2 bytes). Extensions are one letter and a value, in any order;
 * empty ones are ignored. CheckSum is CRC-16/MODBUS over everything before ":C", so we always write it last.
 */

export interface Tr005Fields {
  readonly joinEui: Eui64;
  readonly devEui: Eui64;
  /** 8 hex digits; 00000000 when the vendor has no LoRa Alliance VendorID. */
  readonly profileId: string;
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
  /** Whether the code carried a checksum (it was verified); TR005 makes it optional. */
  readonly checksummed: boolean;
}

/** Printable ASCII without ':' (the field separator) and without space, which QR readers and shells mangle. */
const EXTENSION_VALUE = /^[\x21-\x39\x3b-\x7e]+$/;

/** True when `value` can be written as a TR005 extension value. */
export function isTr005Value(value: string): boolean {
  return EXTENSION_VALUE.test(value);
}

/** CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF, no final XOR) of ASCII text. */
export function crc16Modbus(bytes: Uint8Array): number {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}

export function formatTr005(input: Tr005Input): string {
  const parts = ['LW', 'D0', eui64FromBeHex(input.joinEui, 'JoinEUI'), eui64FromBeHex(input.devEui, 'DevEUI'), profileIdOf(input.profileId ?? '00000000')];
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
  return `${body}:C${checksumText(body)}`;
}

export function parseTr005(text: unknown): ParsedTr005 {
  if (typeof text !== 'string') throw new ProtocolError('INVALID_FIELD', 'TR005 code must be a string', 'TR005');
  const fields = text.trim().split(':');
  const [lw, d0, joinEui, devEui, profileId] = fields;
  if (lw !== 'LW' || d0 !== 'D0') throw new ProtocolError('INVALID_FIELD', 'TR005 code must start with LW:D0:', 'TR005');
  if (fields.length < 5) throw new ProtocolError('MISSING_FIELD', 'TR005 code needs JoinEUI, DevEUI and ProfileID', 'TR005');
  const out: { ownerToken?: string; serialNumber?: string; proprietary?: string } = {};
  let checksum: string | undefined;
  let covered = '';
  fields.slice(5).forEach((field, i) => {
    if (field === '') return; // TR005: empty extensions are ignored
    const value = field.slice(1);
    switch (field[0]) {
      case 'O': out.ownerToken = value; break;
      case 'S': out.serialNumber = value; break;
      case 'P': out.proprietary = value; break;
      case 'C':
        checksum = value;
        // The whole content except this field and its leading colon (spec-notes §8.1).
        covered = fields.filter((_, j) => j !== 5 + i).join(':');
        break;
      default: break; // unknown extensions: later TR005 revisions may add letters
    }
  });
  if (checksum !== undefined) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(checksum) || parseInt(checksum, 16) !== crc16Modbus(Buffer.from(covered, 'ascii'))) {
      throw new ProtocolError('INVALID_FIELD', `TR005 checksum ${checksum} does not match the content (expected ${checksumText(covered)})`, 'CheckSum');
    }
  }
  return {
    joinEui: eui64FromBeHex(joinEui, 'JoinEUI'),
    devEui: eui64FromBeHex(devEui, 'DevEUI'),
    profileId: profileIdOf(profileId ?? ''),
    ...out,
    checksummed: checksum !== undefined,
  };
}

function profileIdOf(text: string): string {
  return toHex(parseHex(text, 'ProfileID', 4));
}

function checksumText(body: string): string {
  return crc16Modbus(Buffer.from(body, 'ascii')).toString(16).toUpperCase().padStart(4, '0');
}
