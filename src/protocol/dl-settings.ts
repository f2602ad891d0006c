import { ProtocolError } from './errors.js';

/** DLSettings byte (LoRaWAN 1.1 §6.2.3): bit 7 OptNeg, bits 6..4 RX1DROffset, bits 3..0 RX2DataRate. */
export interface DlSettings {
  readonly optNeg: boolean;
  readonly rx1DrOffset: number;
  readonly rx2DataRate: number;
}

const OPT_NEG = 0x80;

export function decodeDlSettings(byte: number): DlSettings {
  return { optNeg: (byte & OPT_NEG) !== 0, rx1DrOffset: (byte >> 4) & 0x07, rx2DataRate: byte & 0x0f };
}

export function encodeDlSettings(s: DlSettings): number {
  if (!Number.isInteger(s.rx1DrOffset) || s.rx1DrOffset < 0 || s.rx1DrOffset > 7) {
    throw new ProtocolError('OUT_OF_RANGE', 'RX1DROffset must be 0..7', 'DLSettings');
  }
  if (!Number.isInteger(s.rx2DataRate) || s.rx2DataRate < 0 || s.rx2DataRate > 15) {
    throw new ProtocolError('OUT_OF_RANGE', 'RX2DataRate must be 0..15', 'DLSettings');
  }
  return (s.optNeg ? OPT_NEG : 0) | (s.rx1DrOffset << 4) | s.rx2DataRate;
}

/**
 * A 1.1 device picks the Join-accept MIC formula from the OptNeg bit it decrypts
 * (LoRaWAN 1.1 §6.2.3), so the bit must match the derivation the Join Server used.
 */
export function withOptNeg(byte: number, optNeg: boolean): number {
  return optNeg ? byte | OPT_NEG : byte & ~OPT_NEG & 0xff;
}
