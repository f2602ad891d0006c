/*
 * Searching captured bytes (logs, HTTP answers, database files, dumps) for key material in every form a
 * careless line of code could print or store it: hex in either case, base64 (standard and URL-safe, padded or
 * not), raw bytes, and the decimal byte list that JSON.stringify gives a Node Buffer ({"type":"Buffer","data":[…]}).
 */

export interface Secret {
  /** What the key is, for the failure message (e.g. "AppKey of 0004A30B001C0530"). */
  readonly name: string;
  readonly bytes: Buffer;
}

export type Encoding = 'raw' | 'hex-lower' | 'hex-upper' | 'base64' | 'base64url' | 'json-bytes';
export const encodings: readonly Encoding[] = ['raw', 'hex-lower', 'hex-upper', 'base64', 'base64url', 'json-bytes'];

export interface Finding {
  readonly secret: string;
  readonly encoding: Encoding;
  readonly where: string;
  readonly offset: number;
}

/**
 * The needle for one encoding. Base64 uses the longest prefix that does not depend on what follows the key
 * (whole 3-byte groups: 20 characters for a 16-byte key), so the key is found whether or not it is padded or
 * embedded in a longer encoded value that starts with it.
 */
export function needle(bytes: Buffer, encoding: Encoding): Buffer {
  const whole = bytes.subarray(0, bytes.length - (bytes.length % 3));
  switch (encoding) {
    case 'raw':
      return bytes;
    case 'hex-lower':
      return Buffer.from(bytes.toString('hex'));
    case 'hex-upper':
      return Buffer.from(bytes.toString('hex').toUpperCase());
    case 'base64':
      return Buffer.from(whole.toString('base64'));
    case 'base64url':
      return Buffer.from(whole.toString('base64url'));
    case 'json-bytes':
      return Buffer.from([...bytes].join(','));
  }
}

/** Every place a secret occurs in `haystack`, in every encoding. */
export function findSecrets(haystack: Buffer | string, secrets: readonly Secret[], where: string): Finding[] {
  const hay = typeof haystack === 'string' ? Buffer.from(haystack, 'utf8') : haystack;
  const findings: Finding[] = [];
  for (const s of secrets) {
    if (s.bytes.length < 8) throw new Error(`keys-search: ${s.name} is too short to search for reliably`);
    for (const e of encodings) {
      // base64 of a secret shorter than 3 bytes is empty; every secret here is at least 8 bytes.
      const n = needle(s.bytes, e);
      let at = hay.indexOf(n);
      while (at !== -1) {
        // A json-bytes match must start and end at a number boundary ("1,2,3" is not inside "21,2,34").
        if (e !== 'json-bytes' || (!isDigit(hay[at - 1]) && !isDigit(hay[at + n.length]))) {
          findings.push({ secret: s.name, encoding: e, where, offset: at });
        }
        at = hay.indexOf(n, at + 1);
      }
    }
  }
  return findings;
}

function isDigit(b: number | undefined): boolean {
  return b !== undefined && b >= 0x30 && b <= 0x39;
}

/** A readable report of findings, with a little context around each (secret bytes themselves shown masked). */
export function describeFindings(findings: readonly Finding[]): string {
  return findings.map((f) => `${f.secret} in ${f.encoding} in ${f.where} at offset ${f.offset}`).join('\n');
}

/** Embeds `secret` in `encoding` inside random-looking filler, as a log line or a file would carry it. */
export function plant(secret: Buffer, encoding: Encoding, filler: Buffer): Buffer {
  const half = Math.floor(filler.length / 2);
  const around = (inner: Buffer): Buffer => Buffer.concat([filler.subarray(0, half), inner, filler.subarray(half)]);
  switch (encoding) {
    case 'raw':
      return around(secret);
    case 'hex-lower':
    case 'hex-upper':
      return around(Buffer.from(`{"msg":"opened","key":"${needle(secret, encoding).toString()}"}`));
    case 'base64':
      return around(Buffer.from(`key=${secret.toString('base64')}\n`));
    case 'base64url':
      return around(Buffer.from(`key=${secret.toString('base64url')}\n`));
    case 'json-bytes':
      return around(Buffer.from(JSON.stringify({ key: secret })));
  }
}
