import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { HttpRequestMetrics } from './request-metrics.js';

/**
 * The Prometheus registry (PLAT-4). One registry per server instance (not prom-client's global), so
 * several servers in one process, as in tests, never share or double-register metrics. Each domain
 * adds its instruments here.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bulwark_' });
  const registers = [registry];

  const http = {
    requests: new HttpRequestMetrics(registers),
    answersReused: new Counter({
      name: 'bulwark_http_answers_reused_total',
      help: 'GET requests answered again from memory because the database had not changed since (SQLite).',
      registers,
    }),
    rateLimited: new Counter({
      name: 'bulwark_rate_limit_rejections_total',
      help: 'Requests refused with 429 by the rate limiter, by rate-limit class.',
      labelNames: ['class'] as const,
      registers,
    }),
  };

  const audit = {
    appended: new Counter({
      name: 'bulwark_audit_events_appended_total',
      help: 'Audit events committed to the hash chain.',
      registers,
    }),
    pending: new Gauge({
      name: 'bulwark_audit_pending_events',
      help: 'Audit events accepted but not yet committed (the audit lag).',
      registers,
    }),
    commitSeconds: new Histogram({
      name: 'bulwark_audit_commit_seconds',
      help: 'Time to commit one batch of audit events.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    redacted: new Counter({
      name: 'bulwark_audit_redactions_total',
      help: 'Values cut from audit events because they looked like a credential (AUD-2).',
      registers,
    }),
    unavailable: new Counter({
      name: 'bulwark_audit_unavailable_total',
      help: 'Requests refused (503) because their audit events could not be stored (AUD-7).',
      registers,
    }),
  };

  const agents = {
    connected: new Gauge({
      name: 'bulwark_agents_connected',
      help: 'Agents connected to this instance and past the handshake.',
      registers,
    }),
    handshakes: new Counter({
      name: 'bulwark_agent_handshakes_total',
      help: 'Agent connections by how their handshake ended: welcome, refused, timeout (no proof in time) or closed (gone first).',
      labelNames: ['outcome'] as const,
      registers,
    }),
    handshakeSeconds: new Histogram({
      name: 'bulwark_agent_handshake_seconds',
      help: 'Time from the WebSocket upgrade to the welcome of an agent.',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
  };

  const commands = {
    integrityFailures: new Counter({
      name: 'bulwark_command_integrity_failures_total',
      help: 'Commands stopped before delivery because their stored request or approvals no longer matched what the server sealed (CMD-7).',
      registers,
    }),
  };

  const credentials = {
    integrityFailures: new Counter({
      name: 'bulwark_credential_integrity_failures_total',
      help: 'Credentials refused because their row in the database was not one the server issued (a password, session, API key, ...), by kind.',
      labelNames: ['kind'] as const,
      registers,
    }),
  };

  const maintenance = {
    removed: new Counter({
      name: 'bulwark_maintenance_rows_removed_total',
      help: 'Rows deleted by the maintenance jobs (PLAT-6), by job.',
      labelNames: ['job'] as const,
      registers,
    }),
    failures: new Counter({
      name: 'bulwark_maintenance_failures_total',
      help: 'Maintenance job runs that failed (logged with the error), by job.',
      labelNames: ['job'] as const,
      registers,
    }),
  };

  const leases = {
    held: new Gauge({
      name: 'bulwark_lease_held',
      help: 'Whether this instance holds the lease of a cluster-wide job (1) or not (0); on PostgreSQL exactly one instance should hold each (PLAT-6).',
      labelNames: ['lease'] as const,
      registers,
    }),
  };

  return { registry, http, audit, agents, commands, credentials, maintenance, leases };
}

export type Metrics = ReturnType<typeof createMetrics>;
export type AuditMetrics = Metrics['audit'];
export type HttpMetrics = Metrics['http'];
export type AgentMetrics = Metrics['agents'];
export type CommandMetrics = Metrics['commands'];
export type MaintenanceMetrics = Metrics['maintenance'];
export type CredentialMetrics = Metrics['credentials'];
export type LeaseMetrics = Metrics['leases'];
