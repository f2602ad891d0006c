import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/*
 * Vector files live in test/vectors/*.json and are not copied to dist/ by tsc, so the compiled
 * tests find them from the project root: the first directory above this module holding package.json.
 */

let root: string | undefined;

export function projectRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return (root = dir);
    const parent = dirname(dir);
    if (parent === dir) throw new Error('test/helpers/vectors: no package.json above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

/** Loads test/vectors/<name>.json (name with or without the .json suffix). */
export function loadVectors<T>(name: string): T {
  const file = join(projectRoot(), 'test', 'vectors', name.endsWith('.json') ? name : `${name}.json`);
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}

/** Hex (spaces allowed, any case) to bytes; vector files write bytes most-significant first. */
export function hex(text: string): Buffer {
  const digits = text.replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(digits)) throw new Error(`vector hex is malformed: ${text}`);
  return Buffer.from(digits, 'hex');
}

/** Canonical hex for comparisons: upper case, no separators. */
export function toHexUpper(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex').toUpperCase();
}

/** Where a vector comes from (STYLE rule 7): a document and section, or a repository file and test. */
export interface VectorSource {
  readonly document?: string;
  readonly section?: string;
  readonly repository?: string;
  readonly path?: string;
  readonly test?: string;
  readonly commit?: string;
  readonly note?: string;
}

/** Formats the first source of a vector for a test name suffix. */
export function cite(sources: readonly VectorSource[]): string {
  const s = sources[0];
  if (!s) return 'unsourced';
  if (s.repository) return `${s.repository} ${s.path ?? ''}${s.test ? ` ${s.test}` : ''}`.trim();
  return `${s.document ?? ''}${s.section ? ` ${s.section}` : ''}`.trim();
}

/**
 * Snapshots byte inputs before a call; the returned function asserts none of them changed
 * (functions under test must not mutate what they are given).
 */
export function watchInputs(...inputs: Uint8Array[]): () => void {
  const before = inputs.map((b) => Buffer.from(b));
  return () => {
    inputs.forEach((b, i) => {
      if (!Buffer.from(b).equals(before[i] ?? Buffer.alloc(0))) {
        throw new Error(`input #${i} was mutated: ${toHexUpper(before[i] ?? Buffer.alloc(0))} -> ${toHexUpper(b)}`);
      }
    });
  };
}
