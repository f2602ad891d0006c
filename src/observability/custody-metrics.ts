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

/** Running totals of HSM work, as a PKCS#11 custody reports them (KeyCustody.hsmCounters). */
export interface HsmCounterSample {
  readonly calls: Readonly<Record<string, number>>;
  readonly sessionObjectsCreated: number;
  readonly tokenObjectsCreated: number;
  readonly objectsDestroyed: number;
}

/** The parts of a KeyCustody the metrics read (structurally: observability does not import custody). */
export interface CustodyMetricsSource {
  status?(): { readonly members: readonly CustodyMemberSample[] };
  hsmCounters?(): HsmCounterSample;
}

/*
 * Custody metrics, read from custody's own running totals when Prometheus scrapes (the custody layer knows nothing
 * of Prometheus): per-member state and counts of an HSM pool, and the PKCS#11 calls and objects. Counters are set to
 * the running totals: they only grow while the process lives, as Prometheus counters must. Nothing is registered
 * for a custody that reports neither (the software keystore).
 */
export function registerCustodyMetrics(registry: Registry, custody: CustodyMetricsSource): void {
  if (custody.status !== undefined) registerMemberMetrics(registry, () => custody.status!().members);
  if (custody.hsmCounters !== undefined) registerHsmCounters(registry, () => custody.hsmCounters!());
}

function registerMemberMetrics(registry: Registry, members: () => readonly CustodyMemberSample[]): void {
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

/**
 * Exposes the custody's HSM counters, read at each scrape: `joinkeep_pkcs11_calls_total{function}` and
 * `joinkeep_pkcs11_objects_total{event="created_session"|"created_token"|"destroyed"}`.
 */
function registerHsmCounters(registry: Registry, read: () => HsmCounterSample): void {
  new Counter({
    name: 'joinkeep_pkcs11_calls_total',
    help: 'PKCS#11 calls made by the custody, by function',
    labelNames: ['function'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [name, n] of Object.entries(read().calls)) this.inc({ function: name }, n);
    },
  });
  new Counter({
    name: 'joinkeep_pkcs11_objects_total',
    help: 'Key objects created (as session or token objects) and destroyed by the custody',
    labelNames: ['event'],
    registers: [registry],
    collect() {
      const c = read();
      this.reset();
      this.inc({ event: 'created_session' }, c.sessionObjectsCreated);
      this.inc({ event: 'created_token' }, c.tokenObjectsCreated);
      this.inc({ event: 'destroyed' }, c.objectsDestroyed);
    },
  });
}
