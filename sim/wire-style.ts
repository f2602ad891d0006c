import { randomInt } from 'node:crypto';
import type { MacVersion } from '../src/protocol/index.js';

/*
 * How two real network servers put the same request on the wire (spec-notes §2.3, §4.5):
 * - The Things Stack: ProtocolVersion "1.0" or "1.1" (SenderNSID iff 1.1), UPPER-case hex, TransactionID
 *   always 0, MACVersion one of exactly "1.0", "1.0.1" … "1.0.4", "1.1" (pkg/interop/types.go).
 * - ChirpStack v4: ProtocolVersion "1.0", lower-case hex, a random TransactionID, MACVersion "1.0.0" …
 *   "1.0.4", "1.1.0" (lrwn/src/region/mod.rs Display).
 */

export const wireStyles = ['tts', 'chirpstack'] as const;
export type WireStyle = (typeof wireStyles)[number];

export interface WireFormat {
  readonly style: WireStyle;
  readonly protocolVersion: '1.0' | '1.1';
  hex(bytes: Uint8Array | string): string;
  macVersion(v: MacVersion): string;
  transactionId(): number;
}

export function wireFormat(style: WireStyle, protocolVersion?: '1.0' | '1.1'): WireFormat {
  if (style === 'tts') {
    return {
      style,
      protocolVersion: protocolVersion ?? '1.1',
      hex: (b) => asHex(b).toUpperCase(),
      macVersion: (v) => (v === '1.0.0' ? '1.0' : v),
      transactionId: () => 0,
    };
  }
  if (protocolVersion === '1.1') throw new RangeError('ChirpStack speaks TS002 ProtocolVersion 1.0 only');
  return {
    style,
    protocolVersion: '1.0',
    hex: (b) => asHex(b).toLowerCase(),
    macVersion: (v) => (v === '1.1' ? '1.1.0' : v),
    transactionId: () => randomInt(1, 0x1_0000_0000),
  };
}

function asHex(b: Uint8Array | string): string {
  return typeof b === 'string' ? b : Buffer.from(b).toString('hex');
}
