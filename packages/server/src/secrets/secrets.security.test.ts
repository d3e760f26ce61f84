import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/database.js';
import { tableRows } from '../test-support/databases.js';
import { BACKENDS, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * The secrets API (SEC-3, DATA-1), attacked from the outside:
 * - a person with every permission tries to read a value back through any response;
 * - someone with a copy of the database file looks for values in it;
 * - members without `secrets:write`, and a stale session, try to change secrets.
 */

const VALUE = 'pg-password-Xq7v9TzK2mWb4Rn8';
const NEW_VALUE = 'pg-password-second-Lh3Jc6Yd1Pf5';

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

interface SecretView {
  id: string;
  name: string;
  version: number;
}

describe.each(BACKENDS)('secrets on %s', (backend) => {
  it('stores values sealed, versioned and write-only: no answer and no audit event holds one', async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    const created = await owner.send('POST', '/api/orgs/acme/secrets', {
      name: 'DATABASE_PASSWORD',
      description: 'the primary database',
      value: VALUE,
    });
    expect(created.status).toBe(201);
    const createdText = await created.text();
    const secret = JSON.parse(createdText) as SecretView;
    expect(secret).toMatchObject({ name: 'DATABASE_PASSWORD', version: 1 });

    const updated = await owner.send('POST', `/api/orgs/acme/secrets/${secret.id}/versions`, {
      value: NEW_VALUE,
    });
    expect(updated.status).toBe(200);
    const updatedText = await updated.text();
    expect((JSON.parse(updatedText) as SecretView).version).toBe(2);

    const listed = await owner.send('GET', '/api/orgs/acme/secrets');
    const listedText = await listed.text();
    expect((JSON.parse(listedText) as { secrets: SecretView[] }).secrets).toEqual([
      expect.objectContaining({ id: secret.id, name: 'DATABASE_PASSWORD', version: 2 }),
    ]);
    const audit = await owner.send('GET', '/api/orgs/acme/audit/events?action=secret.updated');
    const auditText = await audit.text();
    expect(auditText).toContain('"version":2');
    for (const text of [createdText, updatedText, listedText, auditText]) {
      expect(text).not.toContain(VALUE);
      expect(text).not.toContain(NEW_VALUE);
    }
  });

  it('refuses a second secret of the same name, a malformed name, an empty value and unknown fields, storing nothing', async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    expect(
      (await owner.send('POST', '/api/orgs/acme/secrets', { name: 'API_TOKEN', value: 'one' })).status,
    ).toBe(201);
    const again = await owner.json<{ error: { code: string } }>('POST', '/api/orgs/acme/secrets', {
      name: 'API_TOKEN',
      value: 'two',
    });
    expect([again.status, again.body.error.code]).toEqual([409, 'secret_exists']);
    // Two at once: one is stored, the other told the name is taken (never a 500).
    const racing = await Promise.all(
      ['one', 'two'].map((value) => owner.send('POST', '/api/orgs/acme/secrets', { name: 'RACE', value })),
    );
    expect(racing.map((r) => r.status).sort()).toEqual([201, 409]);
    for (const body of [
      { name: '1BAD', value: 'x' },
      { name: 'HAS SPACE', value: 'x' },
      { name: 'EMPTY', value: '' },
      { name: 'EXTRA', value: 'x', plaintext: true },
    ]) {
      const refused = await owner.send('POST', '/api/orgs/acme/secrets', body);
      expect(refused.status, JSON.stringify(body)).toBe(422);
    }
    const listed = await owner.json<{ secrets: SecretView[] }>('GET', '/api/orgs/acme/secrets');
    expect(listed.body.secrets.map((s) => s.name)).toEqual(['API_TOKEN', 'RACE']);
  });

  it('lets only secrets:write change secrets, after a recent sign-in, and audits each refusal', async () => {
    world = await startOrgWorld({}, backend);
    const created = await world.owner.client.json<SecretView>('POST', '/api/orgs/acme/secrets', {
      name: 'DEPLOY_KEY',
      value: VALUE,
    });
    // Operators use secrets in commands and read their names; they do not write them.
    const operator = await world.join('operator@acme.test', 'operator');
    expect((await operator.client.send('GET', '/api/orgs/acme/secrets')).status).toBe(200);
    for (const [method, route, body] of [
      ['POST', '/api/orgs/acme/secrets', { name: 'MINE', value: 'x' }],
      ['POST', `/api/orgs/acme/secrets/${created.body.id}/versions`, { value: 'x' }],
      ['DELETE', `/api/orgs/acme/secrets/${created.body.id}`, undefined],
    ] as const) {
      expect((await operator.client.send(method, route, body)).status, `${method} ${route}`).toBe(403);
    }
    // A viewer does not even see the names.
    const viewer = await world.join('viewer@acme.test', 'viewer');
    expect((await viewer.client.send('GET', '/api/orgs/acme/secrets')).status).toBe(403);
    const denials = await world.owner.client.json<{ events: unknown[] }>(
      'GET',
      '/api/orgs/acme/audit/events?action=access.denied',
    );
    expect(denials.body.events.length).toBeGreaterThanOrEqual(4);

    // Attack: a session left open for twenty minutes is used to replace the value.
    world.clock.advance(20 * 60_000);
    const stale = await world.owner.client.json<{ error: { code: string } }>(
      'POST',
      `/api/orgs/acme/secrets/${created.body.id}/versions`,
      { value: NEW_VALUE },
    );
    expect([stale.status, stale.body.error.code]).toEqual([403, 'step_up_required']);
  });

  it('leaves no value in the database file, and deleting a secret removes every version', async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    const created = await owner.json<SecretView>('POST', '/api/orgs/acme/secrets', {
      name: 'S3_KEY',
      value: VALUE,
    });
    await owner.send('POST', `/api/orgs/acme/secrets/${created.body.id}/versions`, { value: NEW_VALUE });
    if (backend === 'sqlite') {
      // Attack: a copy of the database file (and its write-ahead log) searched for the values.
      const file = path.join(world.server.dataDir, 'bulwark.db');
      for (const part of [file, `${file}-wal`].filter((f) => existsSync(f))) {
        const bytes = readFileSync(part);
        for (const value of [VALUE, NEW_VALUE]) {
          expect(bytes.includes(Buffer.from(value))).toBe(false);
          expect(bytes.includes(Buffer.from(value).toString('base64'))).toBe(false);
        }
      }
    } else {
      // Attack: a dump of the database searched for the values.
      const database = openDatabase(world.server.config);
      try {
        const dump = JSON.stringify(await tableRows(database));
        expect(dump).toContain('S3_KEY');
        for (const value of [VALUE, NEW_VALUE]) {
          expect(dump.includes(value)).toBe(false);
          expect(dump.includes(Buffer.from(value).toString('base64'))).toBe(false);
        }
      } finally {
        await database.close();
      }
    }
    const deleted = await owner.send('DELETE', `/api/orgs/acme/secrets/${created.body.id}`);
    expect(deleted.status).toBe(200);
    expect(
      (await owner.json<{ secrets: SecretView[] }>('GET', '/api/orgs/acme/secrets')).body.secrets,
    ).toEqual([]);
    const again = await owner.send('POST', `/api/orgs/acme/secrets/${created.body.id}/versions`, {
      value: 'x',
    });
    expect(again.status).toBe(404);
  });
});
