import { ProtocolError } from './errors.js';

/** LoRaWAN L2 versions a Join Server can activate, canonical spelling. */
export const macVersions = ['1.0.0', '1.0.1', '1.0.2', '1.0.3', '1.0.4', '1.1'] as const;
export type MacVersion = (typeof macVersions)[number];

/*
 * Interop (spec-notes §2.3): The Things Stack sends "1.0", "1.0.1" … "1.0.4", "1.1";
 * ChirpStack sends "1.0.0" … "1.0.4", "1.1.0". A trailing regional-parameters revision
 * letter ("1.0.2b", "1.0.2-revB") does not change the join procedure and is ignored.
 */
const MAC_VERSION = /^1\.(0|1)(?:\.(\d))?(?:[-_ ]?(?:rev\.?)?[a-z])?$/i;

export function parseMacVersion(text: unknown, field = 'MACVersion'): MacVersion {
  const m = typeof text === 'string' ? MAC_VERSION.exec(text.trim()) : null;
  if (m) {
    const minor = m[1];
    const patch = m[2] ?? '0';
    if (minor === '0' && Number(patch) <= 4) return `1.0.${patch}` as MacVersion;
    if (minor === '1' && patch === '0') return '1.1';
  }
  throw new ProtocolError('INVALID_MAC_VERSION', `${field} ${JSON.stringify(text)} is not a LoRaWAN version this server supports (1.0.0–1.0.4, 1.1)`, field);
}

export function isLoRaWAN11(version: MacVersion): boolean {
  return version === '1.1';
}

/**
 * LoRaWAN 1.0.4 §6.2.5 and 1.1 §6.2.5: DevNonce is a counter that must increase.
 * Before 1.0.4 it is random and the JS only refuses reuse (1.0.3 §6.2.4).
 */
export function usesDevNonceCounter(version: MacVersion): boolean {
  return version === '1.0.4' || version === '1.1';
}
