import { Counter, Gauge, type Registry } from 'prom-client';

/** What the metrics read from a replicated custody (an HSM pool) at each scrape; the shape of its status(). */
export interface CustodyMemberSample {
  readonly name: string;
  readonly state: 'up' | 'down' | 'inconsistent';
  readonly operations: number;
  readonly failures: number;
  readonly readmissions: number;
}

const STATES = ['up', 'down', 'inconsistent'] as const;

/*
 * Per-member metrics of an HSM pool, read from the pool's own counters when Prometheus scrapes (the custody layer
 * knows nothing of Prometheus). Counters are set to the pool's running totals: they only grow while the process
 * lives, as Prometheus counters must.
 */
export function registerCustodyMetrics(registry: Registry, members: () => readonly CustodyMemberSample[]): void {
  new Gauge({
    name: 'joinkeep_hsm_member_up',
    help: 'HSM pool member in service (1) or not (0)',
    labelNames: ['member'],
    registers: [registry],
    collect() {
      this.reset();
      for (const m of members()) this.set({ member: m.name }, m.state === 'up' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'joinkeep_hsm_member_state',
    help: 'HSM pool member state: 1 for the current one of up, down (failed, being reopened), inconsistent (lacks keys the others hold)',
    labelNames: ['member', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const m of members()) for (const s of STATES) this.set({ member: m.name, state: s }, m.state === s ? 1 : 0);
    },
  });
  const total = (name: string, help: string, value: (m: CustodyMemberSample) => number): void => {
    new Counter({
      name,
      help,
      labelNames: ['member'],
      registers: [registry],
      collect() {
        this.reset();
        for (const m of members()) this.inc({ member: m.name }, value(m));
      },
    });
  };
  total('joinkeep_hsm_member_operations_total', 'Key operations an HSM pool member answered', (m) => m.operations);
  total('joinkeep_hsm_member_failures_total', 'Key operations that failed on an HSM pool member and were run again on another member', (m) => m.failures);
  total('joinkeep_hsm_member_readmissions_total', 'Times an HSM pool member returned to service after being out', (m) => m.readmissions);
}
