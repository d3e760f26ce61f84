import { type Caller, callerEvent } from '../access/caller.js';
import type { Transact } from '../audit/audited-transaction.js';
import { AppError } from '../errors.js';
import type { MfaService } from '../mfa/mfa.service.js';
import { createOrgsStore, type OrgsStore } from '../orgs/orgs.store.js';
import type { SsoStore } from './sso.store.js';

export interface SsoEnforcement {
  ssoRequired: boolean;
  breakGlassUserId: string | null;
}

/**
 * "SSO required" (SSO-4) and its break-glass owner (AUTH-8). Requiring SSO takes an enabled
 * connection to sign in through, and a break-glass owner with a second factor for the day the
 * provider is down; and it is refused when it would shut out the person setting it. Changes are
 * privileged and audited with the change (AUD-7).
 */
export function createSsoEnforcementService(deps: {
  store: SsoStore;
  orgs: Pick<OrgsStore, 'findMember'>;
  mfa: Pick<MfaService, 'isEnrolled'>;
  transact: Transact;
}) {
  const { store, orgs, mfa, transact } = deps;
  return {
    current: (caller: Caller): SsoEnforcement => ({
      ssoRequired: caller.org.ssoRequired,
      breakGlassUserId: caller.org.breakGlassUserId,
    }),

    async set(
      caller: Caller,
      wanted: SsoEnforcement,
      /** Whether the caller's own session came through one of this organization's connections. */
      callerSignedInThroughSso: boolean,
    ): Promise<SsoEnforcement> {
      const before = { ssoRequired: caller.org.ssoRequired, breakGlassUserId: caller.org.breakGlassUserId };
      if (wanted.ssoRequired) {
        if (!(await store.connections(caller.org.id)).some((connection) => connection.enabled === 1))
          throw new AppError(
            409,
            'sso_connection_required',
            'Add and test a connection to your identity provider first.',
          );
        const owner = wanted.breakGlassUserId
          ? await orgs.findMember(caller.org.id, wanted.breakGlassUserId)
          : undefined;
        if (owner?.role !== 'owner' || !(await mfa.isEnrolled(owner.id)))
          throw new AppError(
            409,
            'break_glass_owner_required',
            'Name an owner with a second factor as the break-glass account: the one who can still sign in when the identity provider is down.',
          );
        if (!callerSignedInThroughSso && caller.userId !== wanted.breakGlassUserId)
          throw new AppError(
            409,
            'would_lock_you_out',
            'You signed in with a password: sign in through the identity provider first, or you would lose access yourself.',
          );
      }
      const after = { ssoRequired: wanted.ssoRequired, breakGlassUserId: wanted.breakGlassUserId };
      if (before.ssoRequired === after.ssoRequired && before.breakGlassUserId === after.breakGlassUserId)
        return after;
      await transact(async (trx, events) => {
        await createOrgsStore(trx).setSsoEnforcement(
          caller.org.id,
          after.ssoRequired,
          after.breakGlassUserId,
        );
        events.push(
          callerEvent(
            caller,
            'sso.enforcement_changed',
            { type: 'org', id: caller.org.id, display: caller.org.slug },
            {
              severity: 'critical',
              ssoRequired: { from: before.ssoRequired, to: after.ssoRequired },
              breakGlassUserId: { from: before.breakGlassUserId, to: after.breakGlassUserId },
            },
          ),
        );
      });
      return after;
    },
  };
}

export type SsoEnforcementService = ReturnType<typeof createSsoEnforcementService>;
