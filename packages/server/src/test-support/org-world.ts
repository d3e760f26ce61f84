import { expect } from 'vitest';
import { manualClock } from './audit.js';
import { createPostgresDatabase, postgresUrl } from './databases.js';
import { runCli } from './processes.js';
import { startTestServer, type TestServer } from './server.js';
import { SessionClient } from './session-client.js';

/**
 * A running server with an organization (`acme`) and its owner signed in, plus helpers that add
 * members the way people do: the owner invites, the invitee accepts and creates their account.
 */

export const OWNER = { email: 'owner@acme.test', password: 'Tr4vel-Quietly-Over-Mountains' };
export const MEMBER_PASSWORD = 'Quiet-Harbor-Lantern-93';

export interface Member {
  id: string;
  email: string;
  client: SessionClient;
}

export interface OrgWorld {
  server: TestServer;
  clock: ReturnType<typeof manualClock>;
  owner: Member;
  slug: string;
  /** Invites `email` with `role` as `inviter` (the owner by default) and returns the token. */
  invite(email: string, role: string, inviter?: SessionClient): Promise<string>;
  /** Invites and accepts: a new member, signed in. */
  join(email: string, role: string): Promise<Member>;
  signIn(email: string, password?: string): Promise<Member>;
  /** Creates another organization with the operator's CLI (`bulwark admin create-org`), MFA optional. */
  createOrg(name: string, ownerEmail?: string): Promise<void>;
  /** Runs `bulwark admin …` against this server's data (a real process). */
  admin(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** Runs any `bulwark` command against this server's data (a real process). */
  cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

export type Backend = 'sqlite' | 'postgresql';

/** The backends every organization flow runs on; PostgreSQL only where the machine has it. */
export const BACKENDS: Backend[] = postgresUrl() ? ['sqlite', 'postgresql'] : ['sqlite'];

export async function startOrgWorld(
  env: Record<string, string> = {},
  backend: Backend = 'sqlite',
  /** Where the server's manual clock starts: now, for a world a real agent (on real time) talks to. */
  startAt = Date.UTC(2026, 10, 22, 9),
): Promise<OrgWorld> {
  const clock = manualClock(startAt);
  const postgres = backend === 'postgresql' ? await createPostgresDatabase(postgresUrl()!) : undefined;
  if (postgres) env = { BULWARK_DATABASE_URL: postgres.url, ...env };
  const server = await startTestServer(
    {
      BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
      BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
      BULWARK_BOOTSTRAP_ORG_NAME: 'Acme',
      BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000',
      BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '10000',
      BULWARK_RATE_LIMIT_READ_PER_MINUTE: '10000',
      ...env,
    },
    { clock: clock.now },
  );

  async function signIn(email: string, password = MEMBER_PASSWORD): Promise<Member> {
    const client = new SessionClient(server.url);
    const response = await client.login(email, password);
    expect(response.status).toBe(200);
    const body = (await response.json()) as { user: { id: string } };
    return { id: body.user.id, email, client };
  }

  const owner = await signIn(OWNER.email, OWNER.password);
  // The data the server actually uses, wherever `env` put it (another data directory, another database).
  const { dataDir, database } = server.config;
  const cli = (...args: string[]) =>
    runCli(args, {
      cwd: dataDir,
      env: {
        BULWARK_DATA_DIR: dataDir,
        BULWARK_DATABASE_URL: database.kind === 'postgres' ? database.url : `sqlite:${database.file}`,
      },
    });

  async function invite(email: string, role: string, inviter = owner.client): Promise<string> {
    const created = await inviter.json<{ token: string }>('POST', '/api/orgs/acme/invitations', {
      email,
      role,
    });
    expect(created.status).toBe(201);
    return created.body.token;
  }

  return {
    server,
    clock,
    owner,
    slug: 'acme',
    invite,
    async join(email, role) {
      const token = await invite(email, role);
      const client = new SessionClient(server.url);
      const accepted = await client.json<{ user: { id: string } }>('POST', '/api/invitations/accept', {
        token,
        displayName: email.split('@')[0],
        password: MEMBER_PASSWORD,
      });
      expect(accepted.status).toBe(200);
      return { id: accepted.body.user.id, email, client };
    },
    signIn,
    async createOrg(name, ownerEmail = OWNER.email) {
      const created = await cli(
        'admin',
        'create-org',
        '--name',
        name,
        '--owner',
        ownerEmail,
        '--mfa-optional',
      );
      expect(created.code, created.stderr).toBe(0);
    },
    admin: (...args) => cli('admin', ...args),
    cli,
    async close() {
      await server.close();
      await postgres?.drop();
    },
  };
}
