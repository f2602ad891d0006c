import type { Command } from 'commander';
import { operatorCaller } from '../../commissioning/caller.js';
import { type OrganisationInput, createOrganisation, getOrganisation, listOrganisations, organisationRoles, updateOrganisation } from '../../commissioning/organisations.js';
import type { OrganisationRecord } from '../../storage/storage.js';
import { UsageError, print, withJoinkeep } from '../context.js';

/* `joinkeep org`: the organisations using this Join Server (docs/api/rest.md). The CLI acts as the operator. */

interface FieldOptions {
  name?: string;
  role?: string[];
  netId?: string[];
  nsId?: string[];
  asId?: string[];
}

/** Repeatable and comma-separated: `--role device-maker --role se-vendor` = `--role device-maker,se-vendor`. */
const list = (values: string[] | undefined) => values?.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');

function fields(o: FieldOptions): OrganisationInput {
  return { name: o.name, roles: list(o.role), netIds: list(o.netId), nsIds: list(o.nsId), asIds: list(o.asId) };
}

function withFields(c: Command): Command {
  return c
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--role <role...>', `its roles: ${organisationRoles.join(', ')}`)
    .option('--net-id <hex...>', 'NetIDs it operates (role network-operator)')
    .option('--ns-id <eui...>', 'NSIDs of its network servers (role network-operator)')
    .option('--as-id <id...>', 'AS-IDs it operates (role as-operator)')
    .option('--json', 'print JSON');
}

export function json(o: OrganisationRecord) {
  return { ...o, createdAt: o.createdAt.toISOString() };
}

function describe(o: OrganisationRecord): string {
  return [
    `Organisation  ${o.id}`,
    `Name          ${o.name}`,
    `Roles         ${o.roles.join(', ') || '-'}`,
    `NetIDs        ${o.netIds.join(', ') || '-'}`,
    `NSIDs         ${o.nsIds.join(', ') || '-'}`,
    `AS-IDs        ${o.asIds.join(', ') || '-'}`,
    `Created       ${o.createdAt.toISOString()}`,
  ].join('\n');
}

export function registerOrg(program: Command): void {
  const org = program.command('org').description('organisations: device makers, SE vendors, device owners, network and AS operators');
  withFields(org.command('create').description('create an organisation'))
    .requiredOption('--id <slug>', 'its id: 2–63 characters of a–z, 0–9 and "-"')
    .requiredOption('--name <name>', 'its display name')
    .action(async (o: FieldOptions & { dataDir?: string; id: string; json?: boolean }) => {
      const created = await withJoinkeep(o, (jk) => createOrganisation({ store: jk.storage, audit: jk.audit }, operatorCaller(), { id: o.id, ...fields(o) }));
      print(o.json === true, json(created), () => `Created organisation ${created.id}.\n${describe(created)}`);
    });
  org
    .command('list')
    .description('list organisations')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--limit <n>', 'at most this many', '100')
    .option('--after <cursor>', 'the page after this cursor (printed at the end of the previous page)')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; limit: string; after?: string; json?: boolean }) => {
      const limit = Number(o.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError('--limit must be an integer from 1 to 1000');
      const page = await withJoinkeep(o, (jk) => listOrganisations({ store: jk.storage, audit: jk.audit }, operatorCaller(), { limit, ...(o.after ? { after: o.after } : {}) }));
      print(o.json === true, { items: page.items.map(json), ...(page.next ? { next: page.next } : {}) }, () =>
        [...page.items.map((x) => `${x.id}\t${x.roles.join(',') || '-'}\t${x.name}`), ...(page.next ? [`(more: --after ${page.next})`] : [])].join('\n') || 'No organisations.',
      );
    });
  org
    .command('show')
    .description('show one organisation')
    .argument('<id>', 'organisation id')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { dataDir?: string; json?: boolean }) => {
      const found = await withJoinkeep(o, (jk) => getOrganisation({ store: jk.storage, audit: jk.audit }, operatorCaller(), id));
      print(o.json === true, json(found), () => describe(found));
    });
  withFields(org.command('update').description('change an organisation: each option given replaces that field'))
    .argument('<id>', 'organisation id')
    .option('--name <name>', 'its display name')
    .action(async (id: string, o: FieldOptions & { dataDir?: string; json?: boolean }) => {
      const patch = fields(o);
      if (Object.values(patch).every((v) => v === undefined)) throw new UsageError('give at least one of --name, --role, --net-id, --ns-id, --as-id');
      const updated = await withJoinkeep(o, (jk) => updateOrganisation({ store: jk.storage, audit: jk.audit }, operatorCaller(), id, patch));
      print(o.json === true, json(updated), () => `Updated organisation ${updated.id}.\n${describe(updated)}`);
    });
}
