import { generateToken, newId, tokenHash } from '@bulwark/protocol';
import { type Caller, callerEvent } from '../access/caller.js';
import type { Transact } from '../audit/audited-transaction.js';
import { NotFoundError } from '../errors.js';
import type { CredentialSeals } from '../identity/credential-seals.js';
import {
  createRegistrationTokensStore,
  type RegistrationTokenRow,
  type RegistrationTokensStore,
} from './registration-tokens.store.js';

/**
 * Registration tokens (AGT-1): a `bwr_` token shown once, stored as its SHA-256, valid for an hour by
 * default (30 days at most), good for one registration by default. Each agent registered with it
 * starts with its preset labels. Revoking a token stops future registrations, never existing agents.
 */

export const DEFAULT_TOKEN_MINUTES = 60;
export const MAX_TOKEN_MINUTES = 30 * 24 * 60;
export const MAX_TOKEN_USES = 1000;

export type RegistrationTokenStatus = 'active' | 'used' | 'expired' | 'revoked';

export function registrationTokenStatus(row: RegistrationTokenRow, now: number): RegistrationTokenStatus {
  if (row.revoked_at !== null) return 'revoked';
  if (row.uses >= row.uses_allowed) return 'used';
  return row.expires_at <= now ? 'expired' : 'active';
}

export function createRegistrationTokensService(deps: {
  tokens: RegistrationTokensStore;
  seals: CredentialSeals;
  transact: Transact;
  clock: () => number;
}) {
  const { tokens, seals, transact, clock } = deps;
  const target = (row: RegistrationTokenRow) => ({
    type: 'registration_token',
    id: row.id,
    display: row.description || row.id,
  });

  return {
    async list(orgId: string) {
      const now = clock();
      return (await tokens.list(orgId)).map((row) => ({ ...row, status: registrationTokenStatus(row, now) }));
    },

    create(
      caller: Caller,
      input: { description: string; labels: Record<string, string>; expiresInMinutes: number; uses: number },
    ): Promise<{ row: RegistrationTokenRow; token: string }> {
      return transact(async (trx, events) => {
        const now = clock();
        const token = generateToken('bwr');
        const row: RegistrationTokenRow = {
          id: newId('rgt', now),
          org_id: caller.org.id,
          token_hash: tokenHash(token),
          description: input.description,
          labels: JSON.stringify(input.labels),
          uses_allowed: input.uses,
          uses: 0,
          created_by: caller.userId,
          created_at: now,
          expires_at: now + input.expiresInMinutes * 60_000,
          revoked_at: null,
          seal: '',
        };
        row.seal = await seals.inTransaction(trx).seal('registration-token', row);
        await createRegistrationTokensStore(trx).insert(row);
        events.push(
          callerEvent(caller, 'agent.registration_token_created', target(row), {
            labels: input.labels,
            uses: input.uses,
            expiresAt: new Date(row.expires_at).toISOString(),
          }),
        );
        return { row, token };
      });
    },

    revoke(caller: Caller, id: string): Promise<void> {
      return transact(async (trx, events) => {
        const store = createRegistrationTokensStore(trx);
        const row = await store.find(caller.org.id, id);
        if (!row || !(await store.revoke(caller.org.id, id, clock())))
          throw new NotFoundError('No such registration token, or it is already revoked.');
        events.push(callerEvent(caller, 'agent.registration_token_revoked', target(row)));
      });
    },
  };
}

export type RegistrationTokensService = ReturnType<typeof createRegistrationTokensService>;
