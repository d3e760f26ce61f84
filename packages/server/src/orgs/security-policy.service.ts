import { type Caller, callerEvent } from '../access/caller.js';
import type { Transact } from '../audit/audited-transaction.js';
import { AppError } from '../errors.js';
import type { MfaService } from '../mfa/mfa.service.js';
import { createOrgsStore } from './orgs.store.js';

/**
 * An organization's security policy (MFA-4). Changing it commits with its audit event (AUD-7); turning
 * "MFA required" on needs a factor of one's own first, or the owner would lock themselves out with it.
 */
export function createSecurityPolicyService(deps: {
  transact: Transact;
  mfa: Pick<MfaService, 'isEnrolled'>;
}) {
  const { transact, mfa } = deps;
  return {
    async setMfaRequired(caller: Caller, mfaRequired: boolean): Promise<boolean> {
      const before = caller.org.mfaRequired;
      if (mfaRequired && !before && !(await mfa.isEnrolled(caller.userId)))
        throw new AppError(
          409,
          'own_factor_required',
          'Add an authenticator app or a passkey to your own account first: the policy would lock you out too.',
        );
      if (before === mfaRequired) return mfaRequired;
      await transact(async (trx, events) => {
        await createOrgsStore(trx).setMfaRequired(caller.org.id, mfaRequired);
        events.push(
          callerEvent(
            caller,
            'org.security_policy_changed',
            { type: 'org', id: caller.org.id, display: caller.org.slug },
            { mfaRequired: { from: before, to: mfaRequired }, relaxed: !mfaRequired },
          ),
        );
      });
      return mfaRequired;
    },
  };
}

export type SecurityPolicyService = ReturnType<typeof createSecurityPolicyService>;
