import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { AuditService } from '../audit/audit.service.js';
import type {
  ApiKeysTable,
  DB,
  InvitationsTable,
  LiveTicketsTable,
  MfaFactorsTable,
  RecoveryCodesTable,
  RegistrationTokensTable,
  ScimConfigsTable,
  SessionsTable,
  SsoIdentitiesTable,
} from '../db/schema.js';
import type { CredentialMetrics } from '../ops/metrics.js';
import type { DataKeyLookup, DataKeyring } from '../secrets/data-keyring.js';
import { createRowSealer } from '../secrets/row-seal.js';

/**
 * What each kind of credential row binds, in the order it is sealed: who it belongs to and what it
 * opens. A token is stored as its SHA-256 only (a copy of the database opens nothing), but a hash is
 * no secret from someone who can write the database: they could put in a row for a token of their
 * own, or point a row at another person. The server's seal over these fields, made under a key derived
 * from the master key when the credential is issued and checked whenever it is used, makes such a row
 * open nothing. Counters and last-use times stay outside the seal: they change on use.
 */
const SEALED_FIELDS = {
  session: (
    r: Pick<
      SessionsTable,
      | 'id'
      | 'token_hash'
      | 'user_id'
      | 'created_at'
      | 'expires_at'
      | 'authenticated_at'
      | 'second_factor_pending'
    > &
      // Absent from rows sealed before sessions named their SSO connection (migration 0017 ran first).
      Partial<{ sso_connection_id: string | null; second_factor_at_provider: number }>,
  ) => [
    r.id,
    r.token_hash,
    r.user_id,
    r.created_at,
    r.expires_at,
    r.authenticated_at,
    r.second_factor_pending,
    r.sso_connection_id ?? null,
    r.second_factor_at_provider ?? 0,
  ],
  'api-key': (
    r: Pick<
      ApiKeysTable,
      'id' | 'org_id' | 'user_id' | 'parent_key_id' | 'token_hash' | 'permissions' | 'selector' | 'expires_at'
    >,
  ) => [r.id, r.org_id, r.user_id, r.parent_key_id, r.token_hash, r.permissions, r.selector, r.expires_at],
  'live-ticket': (
    r: Pick<LiveTicketsTable, 'ticket_hash' | 'org_id' | 'session_id' | 'user_id' | 'channel' | 'expires_at'>,
  ) => [r.ticket_hash, r.org_id, r.session_id, r.user_id, r.channel, r.expires_at],
  'recovery-code': (r: Pick<RecoveryCodesTable, 'user_id' | 'code_hash'>) => [r.user_id, r.code_hash],
  'mfa-factor': (r: Pick<MfaFactorsTable, 'id' | 'user_id' | 'type' | 'credential_id' | 'public_key'>) => [
    r.id,
    r.user_id,
    r.type,
    r.credential_id,
    r.public_key,
  ],
  invitation: (
    r: Pick<
      InvitationsTable,
      'id' | 'org_id' | 'email' | 'role' | 'token_hash' | 'invited_by' | 'expires_at'
    >,
  ) => [r.id, r.org_id, r.email, r.role, r.token_hash, r.invited_by, r.expires_at],
  'registration-token': (
    r: Pick<
      RegistrationTokensTable,
      'id' | 'org_id' | 'token_hash' | 'labels' | 'uses_allowed' | 'expires_at'
    >,
  ) => [r.id, r.org_id, r.token_hash, r.labels, r.uses_allowed, r.expires_at],
  'scim-token': (r: Pick<ScimConfigsTable, 'org_id' | 'token_hash' | 'default_role' | 'group_roles'>) => [
    r.org_id,
    r.token_hash,
    r.default_role,
    r.group_roles,
  ],
  'sso-identity': (r: Pick<SsoIdentitiesTable, 'id' | 'issuer' | 'subject' | 'user_id'>) => [
    r.id,
    r.issuer,
    r.subject,
    r.user_id,
  ],
};

export type CredentialKind = keyof typeof SEALED_FIELDS;
export type SealedCredential<K extends CredentialKind> = Parameters<(typeof SEALED_FIELDS)[K]>[0];

/** Every kind of credential the server seals. */
export const CREDENTIAL_KINDS = Object.keys(SEALED_FIELDS) as CredentialKind[];

/** A credential row whose seal does not hold: who it claimed to belong to, for the alert. */
export interface BrokenCredential {
  kind: CredentialKind | 'password';
  /** The row's id, or for rows without one (recovery codes, live tickets) its owner. */
  id: string;
  userId?: string;
  orgId?: string;
}

type OnBroken = (broken: BrokenCredential) => Promise<void> | void;

export function createCredentialSeals(deps: {
  dataKeys: DataKeyLookup & Pick<DataKeyring, 'within'>;
  /** Told of every row whose seal does not hold (an alert: someone wrote credentials into the database). */
  onBroken?: OnBroken;
}) {
  return {
    ...sealsOn(deps.dataKeys, deps.onBroken, true),
    /**
     * The same seals for work inside `trx`: keys are looked up through it (data-keyring.ts, `within`),
     * and the alarm of a broken seal is raised without waiting for it, as its audit event may need the
     * connection the transaction holds (SQLite).
     */
    inTransaction: (trx: Kysely<DB>) => sealsOn(deps.dataKeys.within(trx), deps.onBroken, false),
  };
}

function sealsOn(dataKeys: DataKeyLookup, onBroken: OnBroken | undefined, awaitAlarm: boolean) {
  const sealers = new Map(
    CREDENTIAL_KINDS.map((kind) => [kind, createRowSealer(dataKeys, `credential/${kind}`)] as const),
  );
  const partsOf = <K extends CredentialKind>(kind: K, row: SealedCredential<K>) =>
    (SEALED_FIELDS[kind] as (r: SealedCredential<K>) => unknown[])(row);

  return {
    seal<K extends CredentialKind>(kind: K, row: SealedCredential<K>): Promise<string> {
      return sealers.get(kind)!.seal(partsOf(kind, row));
    },

    /**
     * Whether the row is one the server issued, as it issued it. When not, `onBroken` is told before
     * the answer, so the caller only has to refuse.
     */
    async holds<K extends CredentialKind>(
      kind: K,
      row: SealedCredential<K> & { seal: string },
      about: Omit<BrokenCredential, 'kind'>,
    ): Promise<boolean> {
      if (await sealers.get(kind)!.holds(row.seal, partsOf(kind, row))) return true;
      const alarm = onBroken?.({ kind, ...about });
      if (awaitAlarm) await alarm;
      return false;
    },
  };
}

export type CredentialSealsIn = ReturnType<typeof sealsOn>;
export type CredentialSeals = ReturnType<typeof createCredentialSeals>;

/**
 * What happens when a credential's seal does not hold: it is refused by its caller, and this makes it
 * known: counted on `/metrics`, logged, and a `critical` audit event in the chain of the organization
 * it claimed (the instance's otherwise). An audit store that fails does not turn the refusal into an
 * acceptance; it is logged.
 */
export function credentialIntegrityAlarm(deps: {
  audit: Pick<AuditService, 'record'>;
  logger: Logger;
  metrics: CredentialMetrics;
}): OnBroken {
  return async (broken) => {
    deps.metrics.integrityFailures.inc({ kind: broken.kind });
    deps.logger.error({ credential: broken }, 'refused a credential the server did not issue');
    await deps.audit
      .record({
        orgId: broken.orgId ?? null,
        actor: { type: 'system', id: 'credential-check', display: 'credential check' },
        action: 'credential.integrity_failed',
        target: broken.userId ? { type: 'user', id: broken.userId } : null,
        outcome: 'denied',
        details: { severity: 'critical', code: 'credential_integrity', kind: broken.kind, id: broken.id },
      })
      .catch((error: unknown) =>
        deps.logger.error({ err: error }, 'could not record a refused credential in the audit log'),
      );
  };
}
