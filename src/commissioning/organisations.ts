import type { AuditSink } from '../observability/audit.js';
import { type Eui64, type NetId, eui64FromBeHex, netIdFromBeHex } from '../protocol/index.js';
import { StorageError } from '../storage/errors.js';
import type { CommissioningStore, ListOptions, OrganisationRecord, OrganisationRole } from '../storage/storage.js';
import { type Caller, isOperator, requireScope } from './caller.js';
import { CommissioningError } from './errors.js';
import { parseInput } from './parse-input.js';

/*
 * Organisations: the device makers, secure-element vendors, device owners, network operators and AS operators that
 * use this Join Server. Only the installation operator creates and changes them; an organisation may read itself.
 * An organisation the caller may not see is answered exactly like one that does not exist.
 */

export type OrganisationStore = Pick<CommissioningStore, 'insertOrganisation' | 'getOrganisation' | 'listOrganisations' | 'updateOrganisation'>;

export interface OrganisationDeps {
  readonly store: OrganisationStore;
  readonly audit: AuditSink;
  readonly now?: () => Date;
}

export const organisationRoles: readonly OrganisationRole[] = ['device-maker', 'se-vendor', 'device-owner', 'network-operator', 'as-operator'];

export interface OrganisationInput {
  readonly name?: string | undefined;
  readonly roles?: readonly string[] | undefined;
  readonly netIds?: readonly string[] | undefined;
  readonly nsIds?: readonly string[] | undefined;
  readonly asIds?: readonly string[] | undefined;
}

const ID = /^[a-z0-9][a-z0-9-]{1,62}$/;
const NAME = /^[^\p{Cc}]{1,200}$/u;
// TS002: an AS-ID is free text, compared exactly, carried in SenderID/ReceiverID (as for `peer add-as`).
const AS_ID = /^[\x21-\x7e]{1,128}$/;

export async function createOrganisation(deps: OrganisationDeps, caller: Caller, input: OrganisationInput & { readonly id: string }): Promise<OrganisationRecord> {
  requireScope(caller, 'admin');
  if (!ID.test(input.id)) throw new CommissioningError('INVALID_INPUT', `organisation id "${input.id}" must be 2–63 characters of a–z, 0–9 and "-", starting with a letter or digit`);
  if (input.name === undefined) throw new CommissioningError('INVALID_INPUT', 'an organisation needs a name');
  const organisation: OrganisationRecord = { id: input.id, ...checked(input as OrganisationInput & { name: string }), createdAt: (deps.now ?? (() => new Date()))() };
  try {
    await deps.store.insertOrganisation(organisation);
  } catch (error) {
    if (error instanceof StorageError && error.code === 'ORGANISATION_EXISTS') throw new CommissioningError('CONFLICT', `organisation ${input.id} already exists`);
    throw error;
  }
  await deps.audit.appendAudit({ at: organisation.createdAt, actor: caller.actor, action: 'organisation.create', subject: `organisation/${organisation.id}`, outcome: 'success', details: describe(organisation), organisation: organisation.id });
  return organisation;
}

/** The operator sees every organisation; an organisation sees itself. */
export async function getOrganisation(deps: OrganisationDeps, caller: Caller, id: string): Promise<OrganisationRecord> {
  const found = isOperator(caller) || caller.organisation === id ? await deps.store.getOrganisation(id) : undefined;
  if (found === undefined) throw new CommissioningError('NOT_FOUND', `organisation ${id} not found`);
  return found;
}

export async function listOrganisations(deps: OrganisationDeps, caller: Caller, page: ListOptions = {}): Promise<{ items: OrganisationRecord[]; next?: string }> {
  requireScope(caller, 'admin');
  return deps.store.listOrganisations(page);
}

/** Changes the fields given; the others keep their values. The id and creation time never change. */
export async function updateOrganisation(deps: OrganisationDeps, caller: Caller, id: string, patch: OrganisationInput): Promise<OrganisationRecord> {
  requireScope(caller, 'admin');
  const current = await getOrganisation(deps, caller, id);
  const merged: OrganisationInput & { name: string } = {
    name: patch.name ?? current.name,
    roles: patch.roles ?? current.roles,
    netIds: patch.netIds ?? current.netIds,
    nsIds: patch.nsIds ?? current.nsIds,
    asIds: patch.asIds ?? current.asIds,
  };
  const updated: OrganisationRecord = { id: current.id, ...checked(merged), createdAt: current.createdAt };
  if (!(await deps.store.updateOrganisation(updated))) throw new CommissioningError('NOT_FOUND', `organisation ${id} not found`);
  const changed = (['name', 'roles', 'netIds', 'nsIds', 'asIds'] as const).filter((f) => JSON.stringify(current[f]) !== JSON.stringify(updated[f]));
  await deps.audit.appendAudit({
    at: (deps.now ?? (() => new Date()))(),
    actor: caller.actor,
    action: 'organisation.update',
    subject: `organisation/${id}`,
    outcome: 'success',
    details: { changed, ...describe(updated) },
    organisation: id,
  });
  return updated;
}

function checked(input: OrganisationInput & { name: string }): Omit<OrganisationRecord, 'id' | 'createdAt'> {
  const name = input.name.trim();
  if (!NAME.test(name)) throw new CommissioningError('INVALID_INPUT', 'an organisation\'s name must be 1–200 characters without control characters');
  const roles = unique(input.roles ?? []);
  const badRoles = roles.filter((r) => !(organisationRoles as readonly string[]).includes(r));
  if (badRoles.length > 0) throw new CommissioningError('INVALID_INPUT', `unknown role(s) ${badRoles.join(', ')}; roles are ${organisationRoles.join(', ')}`);
  const netIds = unique((input.netIds ?? []).map((n): NetId => parseInput(() => netIdFromBeHex(n, 'netIds'))));
  const nsIds = unique((input.nsIds ?? []).map((n): Eui64 => parseInput(() => eui64FromBeHex(n, 'nsIds'))));
  const asIds = unique(input.asIds ?? []);
  const badAs = asIds.filter((a) => !AS_ID.test(a));
  if (badAs.length > 0) throw new CommissioningError('INVALID_INPUT', `asIds must be 1–128 printable characters without spaces: ${badAs.map((a) => JSON.stringify(a)).join(', ')}`);
  // What an organisation runs follows from what it is: NetIDs and NSIDs name a network operator's servers.
  if ((netIds.length > 0 || nsIds.length > 0) && !roles.includes('network-operator')) throw new CommissioningError('INVALID_INPUT', 'netIds and nsIds need the role network-operator');
  if (asIds.length > 0 && !roles.includes('as-operator')) throw new CommissioningError('INVALID_INPUT', 'asIds need the role as-operator');
  return { name, roles: roles as OrganisationRole[], netIds, nsIds, asIds };
}

function describe(o: OrganisationRecord): Record<string, unknown> {
  return { name: o.name, roles: o.roles, netIds: o.netIds, nsIds: o.nsIds, asIds: o.asIds };
}

function unique<T>(values: readonly T[]): T[] {
  return [...new Set(values)];
}

