import { ProtocolError } from './errors.js';

/** MHDR values of the frames a Join Server sees (LoRaWAN 1.1 §4.2). MType in bits 7..5, Major in bits 1..0. */
export const MHDR = {
  joinRequest: 0x00,
  joinAccept: 0x20,
  rejoinRequest: 0xc0,
} as const;

const MTYPE_MASK = 0xe0;
const MAJOR_MASK = 0x03;

/** Checks MType and that Major is LoRaWAN R1 (0). RFU bits are ignored, as devices and networks do. */
export function expectMhdr(byte: number | undefined, expected: number, frame: string): void {
  if (byte === undefined || (byte & MTYPE_MASK) !== expected) {
    throw new ProtocolError('INVALID_MTYPE', `PHYPayload is not a ${frame} (MHDR ${byte?.toString(16).padStart(2, '0') ?? 'missing'})`, 'PHYPayload');
  }
  if ((byte & MAJOR_MASK) !== 0) {
    throw new ProtocolError('INVALID_MAJOR', `${frame} has unsupported Major ${byte & MAJOR_MASK}`, 'PHYPayload');
  }
}
