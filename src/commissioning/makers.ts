import type { CommissioningStore } from '../storage/storage.js';
import { type Caller, isAdmin } from './caller.js';
import { CommissioningError } from './errors.js';

/*
 * Makers attached to organisations (`joinkeep maker add --org`): an organisation acts for its own makers only — it
 * imports their batches and sees their unclaimed stock. The operator acts for every maker.
 */

export async function requireOwnMaker(store: Pick<CommissioningStore, 'makerOrganisations'>, caller: Caller, maker: string): Promise<void> {
  if (isAdmin(caller)) return;
  const organisation = (await store.makerOrganisations()).get(maker);
  if (organisation === undefined || organisation !== caller.organisation) {
    throw new CommissioningError('FORBIDDEN', `the batch is signed by maker ${maker}, which is not a maker of ${caller.organisation === null ? 'this caller' : `organisation ${caller.organisation}`}`);
  }
}
