import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one Joinkeep process. */
export interface Metrics {
  readonly registry: Registry;
  readonly backendRequests: Counter<'message_type' | 'result' | 'mac_version'>;
  readonly backendDuration: Histogram<'message_type'>;
}

/** Running totals of HSM work, as a PKCS#11 custody reports them (KeyCustody.hsmCounters). */
export interface HsmCounterSource {
  (): { readonly calls: Readonly<Record<string, number>>; readonly sessionObjectsCreated: number; readonly tokenObjectsCreated: number; readonly objectsDestroyed: number };
}

/**
 * Exposes the custody's HSM counters, read at each scrape: `joinkeep_pkcs11_calls_total{function}` and
 * `joinkeep_pkcs11_objects_total{event="created_session"|"created_token"|"destroyed"}`.
 */
export function addHsmMetrics(metrics: Metrics, read: HsmCounterSource): void {
  new Counter({
    name: 'joinkeep_pkcs11_calls_total',
    help: 'PKCS#11 calls made by the custody, by function',
    labelNames: ['function'],
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const [name, n] of Object.entries(read().calls)) this.inc({ function: name }, n);
    },
  });
  new Counter({
    name: 'joinkeep_pkcs11_objects_total',
    help: 'Key objects created (as session or token objects) and destroyed by the custody',
    labelNames: ['event'],
    registers: [metrics.registry],
    collect() {
      const c = read();
      this.reset();
      this.inc({ event: 'created_session' }, c.sessionObjectsCreated);
      this.inc({ event: 'created_token' }, c.tokenObjectsCreated);
      this.inc({ event: 'destroyed' }, c.objectsDestroyed);
    },
  });
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'joinkeep_' });
  return {
    registry,
    backendRequests: new Counter({
      name: 'joinkeep_backend_requests_total',
      help: 'Backend Interfaces requests answered, by message type, TS002 result code and MACVersion (empty when not applicable)',
      labelNames: ['message_type', 'result', 'mac_version'],
      registers: [registry],
    }),
    backendDuration: new Histogram({
      name: 'joinkeep_backend_request_duration_seconds',
      help: 'Time from receiving a Backend Interfaces request to sending its answer',
      labelNames: ['message_type'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  };
}
