import type { Command } from 'commander';
import { type ApiKeyView, createApiKey, createOperatorApiKey, listApiKeys, revokeApiKey } from '../../commissioning/api-keys.js';
import { operatorCaller, scopes } from '../../commissioning/caller.js';
import type { Joinkeep } from '../../app/joinkeep.js';
import { UsageError, print, withJoinkeep } from '../context.js';

/*
 * `joinkeep api-key`: keys for the REST API. Operator keys (--operator, organisation null; scope admin sees and may do
 * everything) are made only here. The key is printed once; only a hash of its secret is stored.
 */

const deps = (jk: Joinkeep) => ({ store: jk.storage, audit: jk.audit });

function json(k: ApiKeyView) {
  return { ...k, createdAt: k.createdAt.toISOString(), expiresAt: k.expiresAt?.toISOString() ?? null, revokedAt: k.revokedAt?.toISOString() ?? null };
}

function state(k: ApiKeyView, now: Date): string {
  if (k.revokedAt !== null) return `revoked ${k.revokedAt.toISOString()}`;
  if (k.expiresAt !== null) return k.expiresAt <= now ? `expired ${k.expiresAt.toISOString()}` : `expires ${k.expiresAt.toISOString()}`;
  return 'active';
}

function owner(o: { org?: string; operator?: boolean }, required: boolean): string | null | undefined {
  if (o.org !== undefined && o.operator) throw new UsageError('give --org ID or --operator, not both');
  if (o.org !== undefined) return o.org;
  if (o.operator) return null;
  if (required) throw new UsageError('give --org ID (a key of that organisation) or --operator (an installation-operator key)');
  return undefined;
}

export function registerApiKey(program: Command): void {
  const key = program.command('api-key').description('API keys for the REST API (/api/v1)');
  key
    .command('create')
    .description('create an API key and print it once (store it now: only a hash is kept)')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--org <id>', 'a key of this organisation')
    .option('--operator', 'an installation-operator key (no organisation; scope admin may do everything)')
    .requiredOption('--name <name>', 'what the key is for, e.g. "factory line 2"')
    .requiredOption('--scope <scope...>', `its scopes: ${scopes.join(', ')}`)
    .option('--expires <iso>', 'expiry time (ISO 8601), e.g. 2027-01-01T00:00:00Z')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; org?: string; operator?: boolean; name: string; scope: string[]; expires?: string; json?: boolean }) => {
      const organisation = owner(o, true);
      const expiresAt = o.expires === undefined ? null : new Date(o.expires);
      if (expiresAt !== null && Number.isNaN(expiresAt.getTime())) throw new UsageError(`--expires ${o.expires} is not an ISO 8601 time`);
      const input = { name: o.name, scopes: o.scope.flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== ''), expiresAt };
      const created = await withJoinkeep(o, (jk) => (organisation === null ? createOperatorApiKey(deps(jk), 'cli', input) : createApiKey(deps(jk), operatorCaller(), organisation!, input)));
      print(o.json === true, { key: created.key, apiKey: json(created.apiKey) }, () =>
        [
          `Created API key ${created.apiKey.id} (${created.apiKey.organisation === null ? 'operator' : `organisation ${created.apiKey.organisation}`}; scopes ${created.apiKey.scopes.join(', ')}).`,
          'The key, shown this once (send it as "Authorization: Bearer <key>"):',
          created.key,
        ].join('\n'),
      );
    });
  key
    .command('list')
    .description('list API keys (never their secrets): of one organisation, the operator\'s, or all')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--org <id>', 'only this organisation\'s keys')
    .option('--operator', 'only the operator keys')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; org?: string; operator?: boolean; json?: boolean }) => {
      const which = owner(o, false);
      const keys = await withJoinkeep(o, async (jk) => {
        if (which !== undefined) return listApiKeys(deps(jk), operatorCaller(), which);
        const all = await listApiKeys(deps(jk), operatorCaller(), null);
        for (let after: string | undefined; ; ) {
          const page = await jk.storage.listOrganisations({ limit: 1000, ...(after === undefined ? {} : { after }) });
          for (const org of page.items) all.push(...(await listApiKeys(deps(jk), operatorCaller(), org.id)));
          if (page.next === undefined) return all;
          after = page.next;
        }
      });
      const now = new Date();
      print(o.json === true, keys.map(json), () => keys.map((k) => `${k.id}\t${k.organisation ?? '(operator)'}\t${k.name}\t${k.scopes.join(',')}\t${state(k, now)}`).join('\n') || 'No API keys.');
    });
  key
    .command('revoke')
    .description('revoke an API key at once')
    .argument('<id>', 'the key id (the part after jk_, 16 characters)')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .action(async (id: string, o: { dataDir?: string }) => {
      const revoked = await withJoinkeep(o, (jk) => revokeApiKey(deps(jk), operatorCaller(), id));
      process.stdout.write(`Revoked API key ${revoked.id} (${revoked.name}).\n`);
    });
}
