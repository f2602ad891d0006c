#!/usr/bin/env node
// Enforces the dependency direction of docs/architecture.md (STYLE rule 11): each folder of src/ may import
// only from the folders listed for it. Run by `npm test`; fails with the offending imports.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const src = join(root, 'src');

/** folder → folders it may import from (besides itself). */
const allowed = {
  protocol: [],
  custody: ['protocol'],
  storage: ['protocol'],
  observability: ['protocol', 'storage'],
  join: ['protocol', 'custody', 'storage', 'observability'],
  provisioning: ['protocol', 'custody', 'storage', 'observability'],
  commissioning: ['protocol', 'custody', 'storage', 'observability', 'provisioning'],
  bootstrap: ['protocol', 'custody', 'storage', 'observability', 'join'],
  roaming: ['protocol', 'custody', 'storage', 'observability', 'join'],
  backend: ['protocol', 'custody', 'storage', 'observability', 'join', 'roaming'],
  api: ['protocol', 'custody', 'storage', 'observability', 'join', 'provisioning', 'commissioning', 'bootstrap', 'roaming'],
  console: ['protocol', 'observability', 'api'],
  app: ['protocol', 'custody', 'storage', 'observability', 'join', 'provisioning', 'commissioning', 'bootstrap', 'roaming', 'backend', 'api', 'console'],
  cli: ['protocol', 'custody', 'storage', 'observability', 'join', 'provisioning', 'commissioning', 'app'],
};
// Protocol is pure: no I/O modules either (node:crypto is not used there; crypto lives in custody).
const forbiddenInProtocol = /^(node:)?(fs|net|http|https|dgram|dns|child_process|worker_threads|crypto|os)(\/|$)/;

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : path.endsWith('.ts') ? [path] : [];
  });
}

const problems = [];
for (const file of files(src)) {
  const layer = relative(src, file).split('/')[0];
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
    const spec = m[1] ?? m[2];
    if (spec.startsWith('.')) {
      const target = relative(src, resolve(dirname(file), spec)).split('/')[0];
      if (target.startsWith('..')) problems.push(`${relative(root, file)} imports ${spec} from outside src/`);
      else if (target !== layer && !(allowed[layer] ?? []).includes(target)) problems.push(`${relative(root, file)}: ${layer} must not import ${target} (${spec})`);
    } else if (layer === 'protocol') {
      if (forbiddenInProtocol.test(spec) || !spec.startsWith('node:buffer')) problems.push(`${relative(root, file)}: protocol must stay pure, imports ${spec}`);
    }
  }
  if (!(layer in allowed) && !file.endsWith('.d.ts')) problems.push(`${relative(root, file)}: folder ${layer} is not in the layer map`);
}
if (problems.length) {
  console.error(`Layer check failed:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`Layer check: ${files(src).length} modules follow the dependency direction.`);
