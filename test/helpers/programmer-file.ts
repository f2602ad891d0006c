import { readFile } from 'node:fs/promises';
import { type Eui64, eui64FromBeHex } from '../../src/protocol/index.js';

/** A device as the maker tool's programmer file gives it: the only place its root keys are in clear. */
export interface Programmed {
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly appKey: Buffer;
  readonly nwkKey: Buffer | undefined;
}

/** Reads a programmer file (CSV written by `joinkeep batch seal`). */
export async function programmerFile(path: string): Promise<Programmed[]> {
  const [header, ...lines] = (await readFile(path, 'utf8')).trim().split(/\r?\n/);
  const cols = header!.split(',').map((c) => c.trim().replace(/^"|"$/g, ''));
  const at = (name: string) => cols.findIndex((c) => c.toLowerCase() === name.toLowerCase());
  return lines.map((line) => {
    const f = line.split(',').map((c) => c.trim().replace(/^"|"$/g, ''));
    const nwk = f[at('nwkKey')];
    return { devEui: eui64FromBeHex(f[at('devEui')]!), joinEui: eui64FromBeHex(f[at('joinEui')]!), appKey: Buffer.from(f[at('appKey')]!, 'hex'), nwkKey: nwk ? Buffer.from(nwk, 'hex') : undefined };
  });
}
