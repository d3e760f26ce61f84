import { z } from 'zod';
import { MAX_LENGTH } from './password-policy.js';

/**
 * What the sign-in routes answer and take, shared by every route that starts or changes a session
 * (sign-in, second factor, accepting an invitation): one shape for the console to read.
 */

export const SessionView = z.object({
  user: z.object({
    id: z.string(),
    email: z.string(),
    displayName: z.string(),
    passwordChangeRequired: z.boolean(),
    mfaEnrolled: z.boolean(),
  }),
  secondFactorRequired: z
    .boolean()
    .describe('The password was right; finish with POST /api/auth/mfa/verify. Nothing else opens until then'),
  memberships: z.array(
    z.object({
      orgId: z.string(),
      slug: z.string(),
      name: z.string(),
      role: z.string(),
      mfaRequired: z.boolean(),
    }),
  ),
  csrfToken: z
    .string()
    .describe('Send as X-CSRF-Token on every state-changing request; keep it in memory only'),
});

// Bounded so an attacker cannot make the server hash megabytes; the policy's own limit is lower.
export const Password = z
  .string()
  .min(1)
  .max(4 * MAX_LENGTH);
