import { randomInt } from 'node:crypto';
import { newId } from '@bulwark/protocol';
import type { AuditService } from '../audit/audit.service.js';
import type { Config } from '../config.js';
import { ConfigError } from '../config.js';
import { createOrgsStore } from '../orgs/orgs.store.js';
import { BreachedCheckUnavailableError, type BreachedPasswords } from './breached-passwords.js';
import { passwordProblem } from './password-policy.js';
import type { Passwords } from './passwords.js';
import type { UsersStore } from './users.store.js';

export const DEFAULT_BOOTSTRAP_EMAIL = 'admin@bulwark.localhost';

// No look-alike characters: the one-time password is read off a terminal and typed.
const ALPHABET = 'abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';

/** A generated password for a new or reset account, shown once and to be changed at first sign-in. */
export function oneTimePassword(): string {
  const groups = Array.from({ length: 4 }, () =>
    Array.from({ length: 5 }, () => ALPHABET[randomInt(ALPHABET.length)]).join(''),
  );
  return groups.join('-'); // ~114 bits
}

export function slugify(name: string): string {
  const slug = name
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  return slug || 'default';
}

/**
 * PLAT-1: on the first start of an empty installation, creates an organization and its first owner,
 * from BULWARK_BOOTSTRAP_EMAIL / _PASSWORD or with a generated one-time password that is printed once
 * (to the terminal, not the logs) and must be changed at first sign-in. Does nothing once any user
 * exists, and tolerates a second instance doing the same at the same moment.
 */
export async function bootstrapFirstOwner(deps: {
  config: Pick<Config, 'bootstrap'>;
  users: UsersStore;
  passwords: Passwords;
  audit: AuditService;
  clock: () => number;
  print: (line: string) => void;
  /** The breached-password check (AUTH-1), when configured: a chosen first password goes through it. */
  breached?: BreachedPasswords;
}): Promise<void> {
  const { config, users, passwords, audit, clock, print } = deps;
  if ((await users.count()) > 0) return;

  const email = (config.bootstrap.email ?? DEFAULT_BOOTSTRAP_EMAIL).toLowerCase();
  const orgName = config.bootstrap.orgName;
  const given = config.bootstrap.password;
  if (given) {
    const problem = await passwordProblem(
      given,
      { email, orgName, orgSlug: slugify(orgName) },
      deps.breached,
    ).catch((error: unknown) => {
      if (!(error instanceof BreachedCheckUnavailableError)) throw error;
      // Fail closed at start too, in words the operator can act on.
      throw new ConfigError([
        {
          setting: 'BULWARK_BREACHED_PASSWORDS_URL',
          reason: 'could not be reached to check BULWARK_BOOTSTRAP_PASSWORD',
        },
      ]);
    });
    if (problem) throw new ConfigError([{ setting: 'BULWARK_BOOTSTRAP_PASSWORD', reason: problem.message }]);
  }
  const password = given ?? oneTimePassword();
  const now = clock();
  const mfaRequired = config.bootstrap.mfaRequired;
  const org = {
    id: newId('org', now),
    slug: slugify(orgName),
    name: orgName,
    created_at: now,
    mfa_required: mfaRequired ? 1 : 0,
  };
  const userId = newId('usr', now);
  const user = {
    id: userId,
    email,
    display_name: 'Owner',
    password_hash: await passwords.verifierFor(userId, password),
    status: 'active' as const,
    password_change_required_at: given ? null : now,
    password_changed_at: now,
    created_at: now,
    updated_at: now,
  };
  try {
    // The organization, its owner and the record of both commit together (AUD-7).
    await audit.withEvents(async (trx, events) => {
      const tx = createOrgsStore(trx);
      await tx.insertOrg(org);
      await users.inTransaction(trx).insert(user);
      await tx.insertMembership({ org_id: org.id, user_id: user.id, role: 'owner', created_at: now });
      events.push({
        orgId: org.id,
        actor: { type: 'system', id: 'bootstrap', display: 'first start' },
        action: 'identity.bootstrapped',
        target: { type: 'user', id: user.id, display: email },
        outcome: 'success',
        details: { org: org.slug, passwordGenerated: !given, mfaRequired },
      });
    });
  } catch (error) {
    if ((await users.count()) > 0) return; // another instance bootstrapped first
    throw error;
  }
  if (!given) {
    print('');
    print('  Bulwark created the first owner of organization "' + orgName + '":');
    print(`    email:     ${email}`);
    print(`    password:  ${password}`);
    print('  This one-time password is shown only now; you must change it at first sign-in.');
    print('');
  }
}
