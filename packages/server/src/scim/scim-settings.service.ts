import { generateToken, isWellFormedToken, tokenHash } from '@bulwark/protocol';
import { assertCanGrant } from '../access/access.service.js';
import type { AccessStore } from '../access/access.store.js';
import { type Caller, callerEvent } from '../access/caller.js';
import type { Transact } from '../audit/audited-transaction.js';
import { NotFoundError, unlessStorageFull } from '../errors.js';
import type { CredentialSeals } from '../identity/credential-seals.js';
import { createScimStore, type ScimConfigRow, type ScimStore } from './scim.store.js';

export interface GroupRole {
  group: string;
  role: string;
}

export const parseGroupRoles = (json: string) => JSON.parse(json) as GroupRole[];

export interface ScimSettings {
  defaultRole: string;
  groupRoles: GroupRole[];
}

export interface ScimSettingsView extends ScimSettings {
  enabled: boolean;
  /** The token's first characters, to tell which one the provider holds. */
  tokenHint: string | null;
  rotatedAt: number | null;
  lastUsedAt: number | null;
}

/** How the token is shown afterwards: enough to recognise it, nothing to use. */
const HINT_CHARS = 10;
/** Last use is written at most this often: a provider's import makes many requests in a row. */
const TOUCH_EVERY_MS = 60_000;

/**
 * An organization's SCIM settings and its bearer token (SSO-5): the token is shown once, stored as a
 * SHA-256 sealed by the server with the organization and the roles it may give, and rotated by
 * replacing it (the old one stops at once). Changing them takes `security_configuration:manage`, and
 * only someone who could grant the roles SCIM gives can set them.
 */
export function createScimSettingsService(deps: {
  store: ScimStore;
  access: Pick<AccessStore, 'customRoles'>;
  seals: CredentialSeals;
  transact: Transact;
  clock: () => number;
}) {
  const { store, seals, transact, clock } = deps;

  const view = (row: ScimConfigRow | undefined): ScimSettingsView =>
    row
      ? {
          enabled: true,
          tokenHint: row.token_hint,
          defaultRole: row.default_role,
          groupRoles: parseGroupRoles(row.group_roles),
          rotatedAt: row.rotated_at,
          lastUsedAt: row.last_used_at,
        }
      : {
          enabled: false,
          tokenHint: null,
          defaultRole: 'viewer',
          groupRoles: [],
          rotatedAt: null,
          lastUsedAt: null,
        };

  async function assertGrantable(caller: Caller, settings: ScimSettings) {
    const customRoles = await deps.access.customRoles(caller.org.id);
    for (const role of new Set([settings.defaultRole, ...settings.groupRoles.map((m) => m.role)]))
      assertCanGrant(caller, 'give through SCIM', role, customRoles);
  }

  /** Writes the configuration with a new token when `token` is set, else with the one it has. */
  async function write(caller: Caller, settings: ScimSettings, newToken: boolean) {
    await assertGrantable(caller, settings);
    const now = clock();
    const existing = await store.config(caller.org.id);
    if (!existing && !newToken) throw new NotFoundError('SCIM is not on for this organization.');
    const token = newToken ? generateToken('bwp') : undefined;
    const row: ScimConfigRow = {
      org_id: caller.org.id,
      token_hash: token ? tokenHash(token) : existing!.token_hash,
      token_hint: token ? token.slice(0, HINT_CHARS) : existing!.token_hint,
      default_role: settings.defaultRole,
      group_roles: JSON.stringify(settings.groupRoles),
      created_by: existing?.created_by ?? caller.userId,
      created_at: existing?.created_at ?? now,
      rotated_at: token ? now : existing!.rotated_at,
      last_used_at: token ? null : (existing?.last_used_at ?? null),
      seal: '',
    };
    // Sealed before the transaction: the seal's key may need reading, on a connection of its own.
    row.seal = await seals.seal('scim-token', row);
    await transact(async (trx, events) => {
      await createScimStore(trx).putConfig(row);
      const action = !existing ? 'scim.configured' : token ? 'scim.token_rotated' : 'scim.configured';
      events.push(
        callerEvent(
          caller,
          action,
          { type: 'org', id: caller.org.id, display: caller.org.slug },
          {
            defaultRole: settings.defaultRole,
            groupRoles: settings.groupRoles.map((m) => `${m.group} → ${m.role}`),
          },
        ),
      );
    });
    return { settings: view(row), ...(token ? { token } : {}) };
  }

  return {
    current: async (orgId: string) => view(await store.config(orgId)),

    /** The members whose accounts SCIM created here (for the access review). */
    provisionedAmong: async (orgId: string) =>
      new Set((await store.createdHere(orgId)).map((row) => row.user_id)),

    /** Turns SCIM on with a first token, or changes its settings and keeps the token. */
    async configure(caller: Caller, settings: ScimSettings) {
      const existing = await store.config(caller.org.id);
      return write(caller, settings, !existing);
    },

    /** A new token; the old one stops working at once. */
    async rotate(caller: Caller) {
      const existing = await store.config(caller.org.id);
      if (!existing) throw new NotFoundError('SCIM is not on for this organization.');
      return write(
        caller,
        { defaultRole: existing.default_role, groupRoles: parseGroupRoles(existing.group_roles) },
        true,
      );
    },

    /** Turns SCIM off: the token stops working; people and teams it made stay as they are. */
    async disable(caller: Caller): Promise<void> {
      await transact(async (trx, events) => {
        if (!(await createScimStore(trx).deleteConfig(caller.org.id)))
          throw new NotFoundError('SCIM is not on for this organization.');
        events.push(
          callerEvent(caller, 'scim.disabled', { type: 'org', id: caller.org.id, display: caller.org.slug }),
        );
      });
    },

    /**
     * The organization a SCIM token opens, or undefined: unknown, or a row the server did not seal
     * (written into the database), which also raises the integrity alarm.
     */
    async authenticate(token: string, hash: string): Promise<{ orgId: string; orgSlug: string } | undefined> {
      if (!isWellFormedToken(token, 'bwp')) return undefined;
      const config = await store.configByTokenHash(hash);
      if (!config) return undefined;
      if (!(await seals.holds('scim-token', config, { id: config.org_id, orgId: config.org_id })))
        return undefined;
      const now = clock();
      if (config.last_used_at === null || now - config.last_used_at >= TOUCH_EVERY_MS)
        await store.touchConfig(config.org_id, now).catch(unlessStorageFull);
      return { orgId: config.org_id, orgSlug: config.org_slug };
    },
  };
}

export type ScimSettingsService = ReturnType<typeof createScimSettingsService>;
