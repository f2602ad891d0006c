import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** spec-notes §1.12 vectors, kept as data (STYLE rule 7). Resolved from the project root, since tsc does not copy JSON. */
const here = fileURLToPath(new URL('.', import.meta.url));
const root = here.includes('/dist/') ? here.slice(0, here.lastIndexOf('/dist/')) : `${here}/../../..`;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export const vectors: Json = JSON.parse(readFileSync(`${root}/test/sim/vectors/join-vectors.json`, 'utf8'));

export function hex(text: string): Buffer {
  return Buffer.from(text, 'hex');
}
