import type { AuditSink } from '../observability/audit.js';
import type { CommissioningStore } from '../storage/storage.js';
import { type Caller, isOperator, requireScope } from './caller.js';
import { CommissioningError } from './errors.js';

/*
 * Makers attached to organisations (`joinkeep maker add --org`): an organisation acts for its own makers only — it
 * imports their batches and sees their unclaimed stock. The operator acts for every maker.
 */

export async function requireOwnMaker(store: Pick<CommissioningStore, 'makerOrganisations'>, caller: Caller, maker: string): Promise<void> {
  if (isOperator(caller)) return;
  const organisation = (await store.makerOrganisations()).get(maker);
  if (organisation === undefined || organisation !== caller.organisation) {
    throw new CommissioningError('FORBIDDEN', `the batch is signed by maker ${maker}, which is not a maker of ${caller.organisation === null ? 'this caller' : `organisation ${caller.organisation}`}`);
  }
}

export interface AttachDeps {
  readonly store: Pick<CommissioningStore, 'getOrganisation' | 'setMakerOrganisation' | 'setPeerOrganisation'>;
  readonly audit: AuditSink;
  readonly now?: () => Date;
}

/** The operator attaches a maker to an organisation (null: detaches it). */
export async function attachMaker(deps: AttachDeps, caller: Caller, maker: string, organisation: string | null): Promise<void> {
  await attach(deps, caller, { kind: 'maker', id: maker, organisation, set: (id, org) => deps.store.setMakerOrganisation(id, org) });
}

/** The operator attaches a peer (`ns/<NetID>[/<NSID>]`, `as/<AS-ID>`) to an organisation (null: detaches it). */
export async function attachPeer(deps: AttachDeps, caller: Caller, peerId: string, organisation: string | null): Promise<void> {
  await attach(deps, caller, { kind: 'peer', id: peerId, organisation, set: (id, org) => deps.store.setPeerOrganisation(id, org) });
}

/** Checks the organisation exists (before anything is added that would then belong to nobody). */
export async function requireOrganisation(deps: Pick<AttachDeps, 'store'>, organisation: string): Promise<void> {
  if ((await deps.store.getOrganisation(organisation)) === undefined) throw new CommissioningError('NOT_FOUND', `organisation ${organisation} not found (create it with \`joinkeep org create\`)`);
}

async function attach(deps: AttachDeps, caller: Caller, a: { kind: 'maker' | 'peer'; id: string; organisation: string | null; set: (id: string, org: string | null) => Promise<boolean> }): Promise<void> {
  requireScope(caller, 'admin');
  if (a.organisation !== null) await requireOrganisation(deps, a.organisation);
  if (!(await a.set(a.id, a.organisation))) throw new CommissioningError('NOT_FOUND', `${a.kind} ${a.id} not found`);
  await deps.audit.appendAudit({
    at: (deps.now ?? (() => new Date()))(),
    actor: caller.actor,
    action: `${a.kind}.organisation`,
    subject: `${a.kind}/${a.id}`,
    outcome: 'success',
    details: { organisation: a.organisation },
    organisation: a.organisation,
  });
}
