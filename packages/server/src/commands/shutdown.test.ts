import type { ServerMessage } from '@bulwark/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { type Database, openPostgres, openSqlite } from '../db/database.js';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * PLAT-8 with AUD-7: the server stops while an agent is reporting the ends of its commands. Shutdown
 * waits for the reports it received to be handled before the audit log closes, and whatever it did
 * not get to stays as it was: afterwards every command that ended has exactly its ending event, and
 * none changed state unrecorded. Nothing failed because the audit log had closed under it.
 */

const COMMANDS = 40;

describe.each(BACKENDS)('shutdown during agent reports on %s', (backend: Backend) => {
  let world: OrgWorld | undefined;
  let database: Database | undefined;

  afterAll(async () => {
    await database?.db.destroy();
    await world?.close();
  });

  it('commits each reported end with its event, or leaves the command as it was', async () => {
    world = await startOrgWorld({}, backend);
    const token = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const registered = await registerAgent(world.server.url, token.body.token, 'app-1');
    const connection = await handshake(world.server.url, registered.agentId, registered.keys);
    const action = { name: 'check', description: 'check', params: { type: 'object' }, risk: 'low' };
    expect((await reportApp(connection, [action])).type).toBe('report_result');
    const ids: string[] = [];
    for (let i = 0; i < COMMANDS; i++) {
      const created = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/commands', {
        agent: registered.agentId,
        service: 'app',
        action: 'check',
      });
      expect(created.status).toBe(201);
      ids.push(created.body.id);
    }
    for (let received = 0; received < COMMANDS; ) {
      if ((await connection.next()).type === 'command') received++;
    }
    // Every end reported at once; the server is told to stop as soon as the first is acknowledged.
    for (const id of ids) {
      connection.socket.send(JSON.stringify({ v: 1, type: 'command_started', commandId: id }));
      connection.socket.send(
        JSON.stringify({
          v: 1,
          type: 'command_finished',
          commandId: id,
          outcome: 'succeeded',
          exitCode: 0,
          message: '',
        }),
      );
    }
    let message: ServerMessage;
    do message = await connection.next();
    while (message.type !== 'command_ack');
    await world.server.stop();

    const config = world.server.config.database;
    database =
      config.kind === 'sqlite'
        ? openSqlite({ file: config.file, busyTimeoutMs: 10_000 })
        : openPostgres({ url: config.url, poolMax: 2 });
    const rows = await database.db.selectFrom('commands').select(['id', 'status']).execute();
    const ended = await database.db
      .selectFrom('audit_events')
      .select(['target_id', 'action'])
      .where('action', 'in', ['command.started', 'command.succeeded'])
      .execute();
    let succeeded = 0;
    for (const row of rows) {
      const events = ended.filter((e) => e.target_id === row.id).map((e) => e.action);
      if (row.status === 'succeeded') {
        succeeded++;
        expect(events.sort()).toEqual(['command.started', 'command.succeeded']);
      } else {
        expect(['dispatched', 'running']).toContain(row.status);
        expect(events).toEqual(row.status === 'running' ? ['command.started'] : []);
      }
    }
    expect(succeeded).toBeGreaterThanOrEqual(1);
    const failures = world.server.logs
      .entries()
      .filter(
        (entry) =>
          entry.msg === 'agent message handling failed' ||
          entry.msg === 'audit events could not be stored; the change is rolled back',
      );
    expect(failures).toEqual([]);
    const verified = await world.cli('audit', 'verify');
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
  }, 60_000);
});
