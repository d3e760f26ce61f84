import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { ServerMessage, ServiceReport } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/database.js';
import { handshake, registerAgent } from '../test-support/agents.js';
import { tableRows } from '../test-support/databases.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * Service reports (AGT-5) and liveness (AGT-4), over real WebSockets.
 *
 * Attacks: an agent reporting a service another agent owns, to take it over (and later its actions);
 * configuration carrying secrets into the database, where backups and every reader of the console
 * would see them; a malformed or hostile params schema (a remote $ref) that would break or steer
 * validation of every command later; a flood of identical reports filling the audit log.
 */

describe.each(BACKENDS)('service reports and liveness on %s', (backend: Backend) => {
  let world: OrgWorld;
  const slug = 'acme';
  // Distinct, recognisable values that must never be written to the database file.
  const SECRETS = {
    marked: 'marked-secret-value-0001',
    byKey: 'by-key-secret-value-0002',
    byShape: 'postgres://app:hunter2-by-shape@db:5432/app',
    byEntropy: 'Zq8rT2vLw9XkP4mN7bC1dF6hJ3sG5yAe',
  };

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_AGENT_HEARTBEAT_SECONDS: '1' }, backend);
  });
  afterAll(() => world?.close());

  async function connectedAgent(name: string) {
    const created = await world.owner.client.json<{ token: string }>(
      'POST',
      `/api/orgs/${slug}/agent-registration-tokens`,
      {},
    );
    const agent = await registerAgent(world.server.url, created.body.token, name);
    const connection = await handshake(world.server.url, agent.agentId, agent.keys);
    expect(connection.answer.type).toBe('welcome');
    const report = async (services: unknown[]) => {
      connection.socket.send(JSON.stringify({ v: 1, type: 'report', services }));
      return (await connection.next()) as Extract<ServerMessage, { type: 'report_result' }>;
    };
    return { agent, connection, report };
  }

  const service = (overrides: Partial<ServiceReport> = {}): ServiceReport => ({
    name: 'billing',
    kind: 'node',
    version: '1.4.0',
    health: { status: 'up', message: '' },
    config: [],
    actions: [
      {
        name: 'restart',
        description: 'Restart the service',
        params: {
          type: 'object',
          properties: { graceSeconds: { type: 'integer', minimum: 0 } },
          additionalProperties: false,
        },
        risk: 'medium',
        timeoutSeconds: 60,
        secrets: [],
      },
    ],
    ...overrides,
  });

  async function servicesListed() {
    const page = await world.owner.client.json<{
      services: Array<{
        id: string;
        name: string;
        agent: { id: string };
        version: string;
        config: unknown[];
      }>;
    }>('GET', `/api/orgs/${slug}/services`);
    return page.body.services;
  }

  async function auditCount(action: string) {
    const page = await world.owner.client.json<{ events: unknown[] }>(
      'GET',
      `/api/orgs/${slug}/audit/events?limit=500&action=${action}`,
    );
    return page.body.events.length;
  }

  describe('service reports (AGT-5)', () => {
    it('stores configuration without secrets: only whether each secret is configured', async () => {
      const { report } = await connectedAgent('cfg-host');
      const result = await report([
        service({
          name: 'cfg',
          config: [
            { key: 'region', value: 'eu-west-1' },
            { key: 'data_root', value: '/var/lib/example-service/data' },
            { key: 'upstream', value: 'https://billing.internal.example:8443/api' },
            { key: 'signing_value', value: SECRETS.marked, secret: true },
            { key: 'DB_PASSWORD', value: SECRETS.byKey },
            { key: 'DATABASE_URL', value: SECRETS.byShape },
            { key: 'opaque', value: SECRETS.byEntropy },
            { key: 'unset_password' },
          ],
        }),
      ]);
      expect(result).toMatchObject({ accepted: ['cfg'], refused: [] });
      const stored = (await servicesListed()).find((s) => s.name === 'cfg');
      expect(stored?.config).toEqual([
        { key: 'region', configured: true, value: 'eu-west-1' },
        { key: 'data_root', configured: true, value: '/var/lib/example-service/data' },
        { key: 'upstream', configured: true, value: 'https://billing.internal.example:8443/api' },
        { key: 'signing_value', configured: true },
        { key: 'DB_PASSWORD', configured: true },
        { key: 'DATABASE_URL', configured: true },
        { key: 'opaque', configured: true },
        { key: 'unset_password', configured: false },
      ]);
      const config = world.server.config.database;
      if (config.kind === 'sqlite') {
        // Not in the database file, nor its write-ahead log (where committed pages sit until a checkpoint).
        const raw = [config.file, `${config.file}-wal`].map((f) => {
          try {
            return readFileSync(f).toString('latin1');
          } catch {
            return '';
          }
        });
        for (const secret of Object.values(SECRETS))
          expect(raw.join('').includes(secret), secret).toBe(false);
        expect(path.basename(config.file)).toBe('bulwark.db');
      } else {
        // Nowhere in the database: no row of any table holds them.
        const database = openDatabase(world.server.config);
        try {
          const dump = JSON.stringify(await tableRows(database));
          expect(dump).toContain('eu-west-1');
          for (const secret of Object.values(SECRETS)) expect(dump.includes(secret), secret).toBe(false);
        } finally {
          await database.close();
        }
      }
    });

    it('refuses a service whose action params are not a valid, self-contained object schema', async () => {
      const { report } = await connectedAgent('schema-host');
      const broken = (params: Record<string, unknown>, name: string) =>
        service({ name, actions: [{ ...service().actions[0]!, params }] });
      const result = await report([
        broken({ type: 'object', properties: { a: { type: 'nonsense' } } }, 'bad-type'),
        broken(
          { type: 'object', properties: { a: { $ref: 'https://attacker.example/schema.json' } } },
          'remote-ref',
        ),
        broken({ type: 'string' }, 'not-object'),
        service({ name: 'fine' }),
      ]);
      expect(result.accepted).toEqual(['fine']);
      expect(result.refused.map((r) => r.service).sort()).toEqual(['bad-type', 'not-object', 'remote-ref']);
      const names = (await servicesListed()).map((s) => s.name);
      expect(names).toContain('fine');
      expect(names).not.toContain('remote-ref');
    });

    it('gives another agent reporting the same name its own service, never the first agent’s', async () => {
      const first = await connectedAgent('owner-host');
      const second = await connectedAgent('intruder-host');
      await first.report([service({ name: 'payments', version: '1.0.0' })]);
      await second.report([service({ name: 'payments', version: '6.6.6', actions: [] })]);
      const payments = (await servicesListed()).filter((s) => s.name === 'payments');
      expect(payments).toHaveLength(2);
      expect(payments.find((s) => s.agent.id === first.agent.agentId)?.version).toBe('1.0.0');
      expect(payments.find((s) => s.agent.id === second.agent.agentId)?.version).toBe('6.6.6');
    });

    it('audits a change once and an unchanged report never', async () => {
      const { report } = await connectedAgent('steady-host');
      const before = await auditCount('service.reported');
      await report([service({ name: 'steady' })]);
      await report([service({ name: 'steady' })]);
      await report([service({ name: 'steady' })]);
      expect(await auditCount('service.reported')).toBe(before + 1);
      await report([service({ name: 'steady', health: { status: 'degraded', message: 'slow disk' } })]);
      expect(await auditCount('service.reported')).toBe(before + 2);
    });
  });

  describe('liveness (AGT-4)', () => {
    it('closes an agent that misses three heartbeats and shows it offline', async () => {
      const { agent, connection } = await connectedAgent('quiet-host');
      const status = async () =>
        (
          await world.owner.client.json<{ status: string }>(
            'GET',
            `/api/orgs/${slug}/agents/${agent.agentId}`,
          )
        ).body.status;
      expect(await status()).toBe('online');
      // No heartbeat is sent; the server's clock moves past three intervals, and its sweeper acts.
      world.clock.advance(3_001);
      expect(await connection.closed).toBe(4408);
      expect(await status()).toBe('offline');
    });
  });
});
