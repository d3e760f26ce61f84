import {
  isWellFormedToken,
  newId,
  type RegisterRequest,
  type RegisterResponse,
  rawPublicKey,
  tokenHash,
} from '@bulwark/protocol';
import { type Caller, callerEvent } from '../access/caller.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import { DeniedError, type Transact } from '../audit/audited-transaction.js';
import type { AgentStatus } from '../db/schema.js';
import { AppError, NotFoundError } from '../errors.js';
import type { CredentialSeals } from '../identity/credential-seals.js';
import type { ServerKeysService } from '../secrets/server-keys.service.js';
import type { AgentKeySeals } from './agent-keys.js';
import { type AgentListQuery, type AgentRow, type AgentsStore, createAgentsStore } from './agents.store.js';
import { registrationTokenStatus } from './registration-tokens.service.js';
import { createRegistrationTokensStore, type RegistrationTokensStore } from './registration-tokens.store.js';

/**
 * Agents (AGT-1, AGT-2, AGT-4). Registration turns one use of a registration token into a new agent
 * holding the public keys it presented; it never reuses or takes over an existing agent (a
 * re-registered host is a new agent id). Disabled agents are refused at connection and may be enabled
 * again; revocation is terminal.
 */

export class RegistrationRefusedError extends AppError {
  constructor() {
    // One answer for malformed, unknown, used, expired and revoked tokens.
    super(
      401,
      'registration_token_invalid',
      'This registration token is not valid: it may have expired, been used or been revoked.',
    );
  }
}

export const parseLabels = (json: string): Record<string, string> =>
  JSON.parse(json) as Record<string, string>;

/**
 * Why an agent runs nothing, said wherever its services are offered (the console disables Run with
 * it); null for an active agent, online or not (an offline agent's commands wait for it).
 */
export function unavailableReason(status: AgentStatus): string | null {
  if (status === 'disabled')
    return 'The agent is disabled: it cannot connect or run anything until someone enables it again.';
  if (status === 'revoked')
    return 'The agent is revoked: it can never connect or run anything again; register the host as a new agent.';
  return null;
}

export function createAgentsService(deps: {
  agents: AgentsStore;
  tokens: RegistrationTokensStore;
  serverKeys: ServerKeysService;
  agentKeys: Pick<AgentKeySeals, 'seal'>;
  seals: Pick<CredentialSeals, 'holds'>;
  audit: AuditService;
  transact: Transact;
  clock: () => number;
}) {
  const { agents, tokens, serverKeys, agentKeys, seals, audit, transact, clock } = deps;
  const agentTarget = (row: Pick<AgentRow, 'id' | 'name'>) => ({
    type: 'agent',
    id: row.id,
    display: row.name,
  });

  async function refuse(
    orgId: string | null,
    context: AuditRequestContext,
    reason: string,
    details = {},
  ): Promise<never> {
    await audit.record({
      orgId,
      actor: { type: 'anonymous', display: 'registration token holder' },
      action: 'agent.registration_refused',
      outcome: 'denied',
      context,
      details: { reason, ...details },
    });
    throw new RegistrationRefusedError();
  }

  async function changeStatus(caller: Caller, id: string, status: AgentStatus, action: AuditInput['action']) {
    return transact(async (trx, events) => {
      const store = createAgentsStore(trx);
      const row = await store.find(caller.org.id, id);
      if (!row) throw new NotFoundError('No such agent.');
      if (row.status === 'revoked')
        throw new AppError(
          409,
          'agent_revoked',
          'This agent is revoked; register the host again as a new agent.',
        );
      if (row.status === status) return row;
      await store.setStatus(caller.org.id, id, status, clock());
      events.push(callerEvent(caller, action, agentTarget(row), { from: row.status, to: status }));
      return { ...row, status };
    });
  }

  return {
    async register(input: RegisterRequest, context: AuditRequestContext): Promise<RegisterResponse> {
      if (!isWellFormedToken(input.token, 'bwr')) return refuse(null, context, 'malformed_token');
      const token = await tokens.findByHash(tokenHash(input.token));
      if (!token) return refuse(null, context, 'unknown_token');
      // A token row the server did not issue (written into the database) registers nothing.
      if (!(await seals.holds('registration-token', token, { id: token.id, orgId: token.org_id })))
        return refuse(token.org_id, context, 'token_integrity', { registrationTokenId: token.id });
      const status = registrationTokenStatus(token, clock());
      if (status !== 'active')
        return refuse(token.org_id, context, `token_${status}`, { registrationTokenId: token.id });

      const signer = await serverKeys.signer('agent-channel');
      // Made and sealed before the transaction: the seal's key may need reading, on a connection of
      // its own.
      const id = newId('agt', clock());
      const keySeal = await agentKeys.seal({
        id,
        org_id: token.org_id,
        signing_key: input.signingKey,
        encryption_key: input.encryptionKey,
      });
      const row = await transact(async (trx, events) => {
        const now = clock();
        // A refusal inside the transaction: rolled back, then audited in the token's organization.
        const refused = (status: number, code: string, message: string, reason: string) =>
          new DeniedError(status, code, message, {
            orgId: token.org_id,
            actor: { type: 'anonymous', display: 'registration token holder' },
            action: 'agent.registration_refused',
            outcome: 'denied',
            context,
            details: { reason, registrationTokenId: token.id },
          });
        // The guarded update decides a race between two registrations holding a single-use token.
        if (!(await createRegistrationTokensStore(trx).consume(token.id, now)))
          throw refused(
            401,
            'registration_token_invalid',
            new RegistrationRefusedError().message,
            'token_used',
          );
        const store = createAgentsStore(trx);
        if (await store.signingKeyInUse(input.signingKey))
          throw refused(
            409,
            'signing_key_in_use',
            'This key belongs to another agent; generate new keys to register.',
            'signing_key_in_use',
          );
        const agent: AgentRow = {
          id,
          org_id: token.org_id,
          name: input.name,
          hostname: input.hostname ?? '',
          labels: token.labels,
          signing_key: input.signingKey,
          encryption_key: input.encryptionKey,
          status: 'active',
          registration_token_id: token.id,
          created_at: now,
          updated_at: now,
          last_seen_at: null,
          key_seal: keySeal,
        };
        await store.insert(agent);
        events.push({
          orgId: token.org_id,
          actor: { type: 'agent', id: agent.id, display: agent.name },
          action: 'agent.registered',
          target: agentTarget(agent),
          outcome: 'success',
          context,
          details: {
            registrationTokenId: token.id,
            issuedBy: token.created_by,
            hostname: agent.hostname,
            labels: parseLabels(agent.labels),
          },
        });
        return agent;
      });
      return {
        agentId: row.id,
        org: { id: token.org_id, slug: token.org_slug },
        name: row.name,
        labels: parseLabels(row.labels),
        serverSigningKey: rawPublicKey(signer.publicKey),
      };
    },

    page: (orgId: string, limit: number, after?: string) => agents.page(orgId, limit, after),
    list: (orgId: string, query: AgentListQuery) => agents.list(orgId, query),

    async get(orgId: string, id: string): Promise<AgentRow> {
      const row = await agents.find(orgId, id);
      if (!row) throw new NotFoundError('No such agent.');
      return row;
    },

    update(caller: Caller, id: string, changes: { name?: string; labels?: Record<string, string> }) {
      return transact(async (trx, events) => {
        const store = createAgentsStore(trx);
        const row = await store.find(caller.org.id, id);
        if (!row) throw new NotFoundError('No such agent.');
        const next = {
          ...(changes.name !== undefined ? { name: changes.name } : {}),
          ...(changes.labels !== undefined ? { labels: JSON.stringify(changes.labels) } : {}),
        };
        if (!(await store.update(caller.org.id, id, next, clock())))
          throw new AppError(
            409,
            'agent_revoked',
            'This agent is revoked; register the host again as a new agent.',
          );
        events.push(
          callerEvent(caller, 'agent.updated', agentTarget(row), {
            ...(changes.name !== undefined ? { name: { from: row.name, to: changes.name } } : {}),
            ...(changes.labels !== undefined
              ? { labels: { from: parseLabels(row.labels), to: changes.labels } }
              : {}),
          }),
        );
        return { ...row, ...next };
      });
    },

    disable: (caller: Caller, id: string) => changeStatus(caller, id, 'disabled', 'agent.disabled'),
    enable: (caller: Caller, id: string) => changeStatus(caller, id, 'active', 'agent.enabled'),
    revoke: (caller: Caller, id: string) => changeStatus(caller, id, 'revoked', 'agent.revoked'),
  };
}

export type AgentsService = ReturnType<typeof createAgentsService>;
