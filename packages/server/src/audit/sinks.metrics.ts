import { Counter, Gauge, type Registry } from 'prom-client';

/** Audit sink delivery on `/metrics` (AUD-6), labelled by sink id (a handful per organization). */
export function createSinkMetrics(registry: Registry) {
  const registers = [registry];
  return {
    lagSeconds: new Gauge({
      name: 'bulwark_audit_sink_lag_seconds',
      help: 'Age of the oldest audit event a sink has not yet taken (0: caught up with the chain head).',
      labelNames: ['sink', 'kind'] as const,
      registers,
    }),
    depth: new Gauge({
      name: 'bulwark_audit_sink_outbox_depth',
      help: "Audit events between a sink's cursor and its chain's head: what it still has to deliver.",
      labelNames: ['sink', 'kind'] as const,
      registers,
    }),
    failures: new Counter({
      name: 'bulwark_audit_sink_failures_total',
      help: 'Failed delivery attempts to an audit sink (each is retried with backoff).',
      labelNames: ['sink', 'kind'] as const,
      registers,
    }),
    delivered: new Counter({
      name: 'bulwark_audit_sink_lines_delivered_total',
      help: 'Lines (events and signed checkpoints) an audit sink has taken.',
      labelNames: ['sink', 'kind'] as const,
      registers,
    }),
  };
}

export type SinkMetrics = ReturnType<typeof createSinkMetrics>;
