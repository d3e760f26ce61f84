import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createRemoteJWKSet, decodeProtectedHeader, errors, type JWTPayload, jwtVerify, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSqlite } from '../db/database.js';
import { type AgentProcesses, agentProcesses, type RunningAgent } from '../test-support/agent-process.js';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { tempDir } from '../test-support/temp.js';

/**
 * Workload identity (SEC-4) from the relying party's side: AWS STS or GCP STS fetches Bulwark's
 * discovery document and JWKS over HTTP and verifies the JWT an action hands it. A real agent process
 * runs the action; the action writes the token it received to a file, as a cloud SDK would read it.
 *
 * Attacks it stops:
 * - a token presented to a relying party it was not minted for (another audience) is refused;
 * - an expired token is refused; a token signed by a key not in the JWKS (a forger's, or one that
 *   left the JWKS after rotation) is refused;
 * - a rogue agent that reports an action asking for an audience the server does not allow for its
 *   organization (another team's cloud, or anything at all) gets no command, so no token;
 * - the token leaking into the command's view, its output, the audit log or the server's logs;
 * - rotation: a token signed just before a rotation still verifies during the overlap (relying
 *   parties keep working), and stops verifying once the old key left the JWKS;
 * - revocation of a leaked key: a database writer cannot publish the revoked key again.
 */

const AWS = 'sts.amazonaws.com';
const TEAM_B = 'api://team-b-only';
const EVIL = 'https://evil.example';
type View = { id: string; status: string; message: string };

let world: OrgWorld;
let front: Server;
let issuer = '';
let work: { path: string; remove(): Promise<void> };
let agents: AgentProcesses;
let agent: RunningAgent;
let agentId = '';
const tokens = () => path.join(work.path, 'tokens');

/** The address relying parties reach Bulwark at: a reverse proxy in front of it, as in production. */
async function startFront(): Promise<void> {
  let target = '';
  front = createServer((request, response) => {
    fetch(`${target}${request.url}`)
      .then(async (answer) => {
        response.writeHead(answer.status, {
          'content-type': answer.headers.get('content-type') ?? 'application/json',
          'cache-control': answer.headers.get('cache-control') ?? '',
        });
        response.end(Buffer.from(await answer.arrayBuffer()));
      })
      .catch(() => response.writeHead(502).end());
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  issuer = `http://localhost:${(front.address() as AddressInfo).port}`;
  world = await startOrgWorld(
    {
      BULWARK_PUBLIC_URL: issuer,
      BULWARK_WORKLOAD_IDENTITY_AUDIENCES: `${AWS},team-b=${TEAM_B}`,
    },
    'sqlite',
    // The real agent checks envelope deadlines on real time: the server's clock starts now.
    Date.now(),
  );
  target = world.server.url;
}

function agentConfig(): string {
  // The action's process: the token to a file (as AWS_WEB_IDENTITY_TOKEN_FILE wants), and to its
  // output, where the agent must mask it.
  const script = `const t = process.env.BULWARK_WORKLOAD_IDENTITY_TOKEN ?? '';
require('node:fs').writeFileSync(${JSON.stringify(tokens())} + '/' + process.argv[1], t);
console.log('token=' + t);`;
  const action = (name: string, audience: string) => ({
    name,
    description: `assumes a role with ${audience}`,
    risk: 'low',
    timeoutSeconds: 30,
    params: {
      type: 'object',
      properties: { name: { type: 'string', pattern: '^[a-z0-9-]+$', maxLength: 40 } },
      required: ['name'],
      additionalProperties: false,
    },
    workloadIdentity: { audience },
    exec: { argv: [process.execPath, '-e', script, '{{name}}'] },
  });
  const file = path.join(work.path, 'agent', 'agent.yaml');
  writeFileSync(
    file,
    JSON.stringify({
      stateFile: 'state.json',
      services: [
        {
          name: 'deploy',
          kind: 'shell',
          health: { status: 'up' },
          actions: [action('assume', AWS), action('team-b', TEAM_B), action('anything', EVIL)],
        },
      ],
    }),
  );
  return file;
}

beforeAll(async () => {
  await startFront();
  work = await tempDir('workload-identity');
  mkdirSync(tokens());
  agents = agentProcesses(work.path);
  await agents.register(world.server.url, world.owner.client, 'cloud-1', 'acme');
  agent = agents.run(agentConfig());
  agentId = (await agent.next('online')).agentId as string;
  await agent.next('report accepted');
}, 60_000);

afterAll(async () => {
  await agents?.killAll();
  await world?.close();
  await new Promise((resolve) => front?.close(resolve));
  await work?.remove();
});

const create = (action: string, name: string) =>
  world.owner.client.json<View & { error?: { code: string; message: string } }>(
    'POST',
    '/api/orgs/acme/commands',
    { agent: agentId, service: 'deploy', action, params: { name }, reason: 'workload identity test' },
  );

/** Runs `assume` to its end and returns the command and the token its process received. */
async function assume(name: string): Promise<{ command: View; token: string }> {
  const created = await create('assume', name);
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  await (await world.owner.client.openEvents('acme', created.body.id)).text();
  const command = (await world.owner.client.json<View>('GET', `/api/orgs/acme/commands/${created.body.id}`))
    .body;
  expect(command.status, command.message).toBe('succeeded');
  return { command, token: readFileSync(path.join(tokens(), name), 'utf8') };
}

/** What AWS STS and GCP STS do: discovery, then the JWKS it names, fetched over HTTP; fresh each time. */
async function relyingParty() {
  const discovery = await fetch(`${issuer}/.well-known/openid-configuration`);
  expect(discovery.status).toBe(200);
  const metadata = (await discovery.json()) as { issuer: string; jwks_uri: string };
  return { metadata, jwks: createRemoteJWKSet(new URL(metadata.jwks_uri)) };
}

async function verify(token: string, options: { audience?: string; at?: number } = {}) {
  const { metadata, jwks } = await relyingParty();
  const { payload } = await jwtVerify(token, jwks, {
    issuer: metadata.issuer,
    audience: options.audience ?? AWS,
    algorithms: ['RS256'],
    requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti'],
    ...(options.at !== undefined ? { currentDate: new Date(options.at * 1000) } : {}),
  });
  return payload;
}

let first: { command: View; token: string; payload: JWTPayload };

describe('workload identity, verified as a cloud token service would', () => {
  it('publishes discovery and a JWKS, and the token the action received verifies against them', async () => {
    const metadata = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    expect(metadata).toEqual({
      issuer,
      jwks_uri: `${issuer}/.well-known/jwks.json`,
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
      claims_supported: expect.arrayContaining([
        'sub',
        'aud',
        'org',
        'agent',
        'service',
        'action',
        'command',
      ]),
    });
    const jwksResponse = await fetch(`${issuer}/.well-known/jwks.json`);
    expect(jwksResponse.headers.get('cache-control')).toBe('public, max-age=300');

    const { command, token } = await assume('first');
    const payload = await verify(token);
    first = { command, token, payload };
    expect(payload).toMatchObject({
      iss: issuer,
      aud: AWS,
      sub: `org:acme:agent:${agentId}:service:deploy:action:assume`,
      jti: command.id,
      org: 'acme',
      agent: agentId,
      service: 'deploy',
      action: 'assume',
      command: command.id,
      requester: world.owner.id,
    });
    expect(payload.exp! - payload.iat!).toBeGreaterThan(0);
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(15 * 60);
    expect(payload.nbf).toBe(payload.iat);
  });

  it('is refused for another audience, once expired, and when signed by a key not in the JWKS', async () => {
    const { token, payload } = first;
    await expect(verify(token, { audience: 'api://AzureADTokenExchange' })).rejects.toBeInstanceOf(
      errors.JWTClaimValidationFailed,
    );
    await expect(verify(token, { at: payload.exp! + 1 })).rejects.toBeInstanceOf(errors.JWTExpired);

    // A forger's key: the same claims, even the published key's id, do not verify.
    const forger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const forge = (kid: string) =>
      new SignJWT({ ...payload }).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(forger);
    const { kid } = decodeProtectedHeader(token);
    await expect(verify(await forge(kid!))).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
    await expect(verify(await forge('key_forged'))).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);
  });

  it('publishes no key a database writer put in: only keys whose sealed private key opens', async () => {
    // Someone who can write the database but not read the master key adds a key pair of their own,
    // or copies a genuine sealed private key onto a new row with their public key: either would let
    // them sign tokens the clouds accept, if the JWKS trusted the stored public key.
    const database = world.server.config.database;
    if (database.kind !== 'sqlite') throw new Error('this test writes the SQLite file');
    const attacker = openSqlite({ file: database.file, busyTimeoutMs: 10_000 });
    try {
      const genuine = await attacker.db
        .selectFrom('workload_identity_keys')
        .selectAll()
        .executeTakeFirstOrThrow();
      const theirs = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
      const row = (id: string, sealed: string) => ({
        ...genuine,
        id,
        public_key: theirs.export({ format: 'der', type: 'spki' }).toString('base64'),
        private_key_sealed: sealed,
        signs_from: 0,
      });
      await attacker.db
        .insertInto('workload_identity_keys')
        .values([row('key_forged1', 'enc1.nothing'), row('key_forged2', genuine.private_key_sealed)])
        .execute();
      const jwks = (await (await fetch(`${issuer}/.well-known/jwks.json`)).json()) as {
        keys: Array<{ kid: string; n: string }>;
      };
      expect(jwks.keys.map((key) => key.kid)).toEqual([genuine.id]);
      const theirModulus = theirs.export({ format: 'jwk' }).n;
      expect(jwks.keys.map((key) => key.n)).not.toContain(theirModulus);
      // Put back as it was for the rotation below.
      await attacker.db.deleteFrom('workload_identity_keys').where('id', 'like', 'key_forged%').execute();
    } finally {
      await attacker.db.destroy();
    }
  });

  it('keeps the token out of the command view, its output, the audit log and the logs', async () => {
    const { command, token } = first;
    const texts = {
      view: await (await world.owner.client.send('GET', `/api/orgs/acme/commands/${command.id}`)).text(),
      list: await (await world.owner.client.send('GET', '/api/orgs/acme/commands')).text(),
      output: await (
        await world.owner.client.send('GET', `/api/orgs/acme/commands/${command.id}/output`)
      ).text(),
      audit: await (await world.owner.client.send('GET', '/api/orgs/acme/audit/events?limit=500')).text(),
      serverLogs: world.server.logs.text,
      agentLogs: JSON.stringify(agent.lines),
    };
    const signature = token.split('.')[2]!;
    for (const [where, text] of Object.entries(texts)) {
      expect(text, where).not.toContain(token);
      expect(text, where).not.toContain(signature);
    }
    // The action printed it: the agent masked it before it left the host.
    expect(texts.output).toContain('token=[masked]');
    const issued = await world.owner.client.json<{
      events: Array<{ target: { id: string }; details: Record<string, unknown> }>;
    }>('GET', '/api/orgs/acme/audit/events?action=workload_identity.issued&limit=10');
    expect(issued.body.events.map((event) => event.target.id)).toContain(command.id);
    expect(issued.body.events[0]!.details).toMatchObject({ agentId, audience: AWS });
  });

  it('refuses a command whose action asks for an audience not allowed for this organization', async () => {
    // A rogue agent reports what it likes: another team's audience, or any relying party at all.
    for (const [action, audience] of [
      ['team-b', TEAM_B],
      ['anything', EVIL],
    ] as const) {
      const refused = await create(action, 'rogue');
      expect([refused.status, refused.body.error?.code]).toEqual([409, 'audience_not_allowed']);
      expect(refused.body.error?.message).toContain(audience);
    }
    const list = await world.owner.client.json<{ commands: Array<{ action: string }> }>(
      'GET',
      '/api/orgs/acme/commands',
    );
    expect(list.body.commands.map((c) => c.action)).toEqual(['assume']);
  });

  it('rotates: the old key verifies through the overlap, the new one signs after the publish delay, the old one leaves', async () => {
    const oldKid = decodeProtectedHeader(first.token).kid;
    const rotated = await world.cli('keys', 'rotate-workload-identity');
    expect(rotated.code, rotated.stderr).toBe(0);
    const publishDelay = 600_000;
    const overlap = 3_600_000;
    const [, rotatedKid, signsFrom] =
      /^new workload-identity key (key_\w+): published now, signs from (\S+)$/m.exec(rotated.stdout) ?? [];

    // `bulwark keys status` lists both, as they stand during the publish delay (the CLI's clock is now).
    const status = await world.cli('keys', 'status');
    expect(status.code, status.stderr).toBe(0);
    const listed = status.stdout
      .split('\n')
      .filter((line) => line.startsWith('workload-identity '))
      .map((line) => line.split(/\s+/));
    expect(listed.map(([, kid, state]) => [kid, state])).toEqual([
      [oldKid, 'signing'],
      [rotatedKid, 'next'],
    ]);
    // The new key signs from the time the rotation printed; the old one leaves after the overlap.
    const oldRetires = Date.parse(signsFrom!) + overlap;
    expect(listed.map(([, , , , , from, , , retires]) => [from, retires])).toEqual([
      [expect.any(String), new Date(oldRetires).toISOString()],
      [signsFrom, '-'],
    ]);

    // Published at once, not yet signing: a cached JWKS will hold the new key before it is used.
    const published = (await (await fetch(`${issuer}/.well-known/jwks.json`)).json()) as {
      keys: Array<{ kid: string }>;
    };
    expect(published.keys.map((key) => key.kid)).toHaveLength(2);
    expect(published.keys.map((key) => key.kid)).toContain(oldKid);
    await verify(first.token, { at: first.payload.iat! });

    // After the publish delay the new key signs; the old one still verifies what it signed.
    world.clock.set(Date.now() + publishDelay + 60_000);
    const second = await assume('second');
    const newKid = decodeProtectedHeader(second.token).kid;
    expect(newKid).not.toBe(oldKid);
    const secondPayload = await verify(second.token, { at: decodeIat(second.token) });
    expect(secondPayload.command).toBe(second.command.id);
    await verify(first.token, { at: first.payload.iat! });

    // After the overlap the old key is gone: what it signed no longer verifies, whatever the time.
    world.clock.set(Date.now() + publishDelay + overlap + 60_000);
    await expect(verify(first.token, { at: first.payload.iat! })).rejects.toBeInstanceOf(
      errors.JWKSNoMatchingKey,
    );
    await verify(second.token, { at: decodeIat(second.token) });
  });

  it("revokes for good: a database writer who clears a revoked key's retirement does not publish it again", async () => {
    // The signing key leaked and the operator revoked it. Whoever holds it, and can write the
    // database but not read the master key, sets the revoked rows' retires_at back to NULL: were the
    // rows still there, the JWKS would publish the leaked key again and the clouds would accept the
    // tokens they sign with it. Revoked keys are deleted, so there is nothing to put back.
    const published = async () =>
      (
        (await (await fetch(`${issuer}/.well-known/jwks.json`)).json()) as { keys: Array<{ kid: string }> }
      ).keys.map((key) => key.kid);
    const leaked = await published();
    const revoked = await world.cli('keys', 'rotate-workload-identity', '--revoke-previous');
    expect(revoked.code, revoked.stderr).toBe(0);
    const now = await published();
    expect(now).toHaveLength(1);
    expect(leaked).not.toContain(now[0]);
    const database = world.server.config.database;
    if (database.kind !== 'sqlite') throw new Error('this test writes the SQLite file');
    const writer = openSqlite({ file: database.file, busyTimeoutMs: 10_000 });
    try {
      await writer.db.updateTable('workload_identity_keys').set({ retires_at: null }).execute();
    } finally {
      await writer.db.destroy();
    }
    expect(await published()).toEqual(now);
  });
});

function decodeIat(token: string): number {
  return (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { iat: number }).iat;
}

describe('without a public URL', () => {
  it('is no issuer: the well-known routes answer 404 and a workload-identity action is refused at creation', async () => {
    const plain = await startOrgWorld({}, 'sqlite');
    try {
      for (const route of ['/.well-known/openid-configuration', '/.well-known/jwks.json'])
        expect((await fetch(`${plain.server.url}${route}`)).status, route).toBe(404);
      const token = await plain.owner.client.json<{ token: string }>(
        'POST',
        '/api/orgs/acme/agent-registration-tokens',
        {},
      );
      const registered = await registerAgent(plain.server.url, token.body.token, 'cloud-2');
      const connection = await handshake(plain.server.url, registered.agentId, registered.keys);
      await reportApp(connection, [
        {
          name: 'assume',
          description: 'assumes a role',
          params: { type: 'object', additionalProperties: false },
          risk: 'low',
          workloadIdentity: { audience: AWS },
        },
      ]);
      const refused = await plain.owner.client.json<{ error: { code: string; message: string } }>(
        'POST',
        '/api/orgs/acme/commands',
        { agent: registered.agentId, service: 'app', action: 'assume' },
      );
      expect([refused.status, refused.body.error.code]).toEqual([409, 'workload_identity_unavailable']);
      expect(refused.body.error.message).toContain('BULWARK_PUBLIC_URL');
      connection.socket.close();
    } finally {
      await plain.close();
    }
  });
});
