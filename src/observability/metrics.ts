import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one Joinkeep process. */
export interface Metrics {
  readonly registry: Registry;
  readonly backendRequests: Counter<'message_type' | 'result' | 'mac_version'>;
  readonly backendDuration: Histogram<'message_type'>;
  /** Activation requests shed by admission control, by reason (`queue_full`, `queue_timeout`). */
  readonly backendShed: Counter<'reason'>;
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
    backendShed: new Counter({
      name: 'joinkeep_backend_shed_total',
      help: 'Activation requests answered at once with an overload Result by admission control: queue_full (no room to wait), queue_timeout (not started within maxQueueMs)',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
}
