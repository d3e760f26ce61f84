import type { DataKeyring } from '../secrets/data-keyring.js';
import { SealedValueError } from '../secrets/keyring.js';
import type { BrokenCredential } from './credential-seals.js';
import type { PasswordHasher } from './password-hasher.js';

/** Where a stored password verifier is bound: it opens for this user only. */
export const passwordContext = (userId: string) => `users/${userId}/password`;

export type PasswordCheck = 'match' | 'mismatch' | 'tampered';

/**
 * Stored password verifiers (AUTH-1): the argon2id hash, sealed by the instance data key and bound to
 * its user. The seal is a pepper held outside the database: a copy of the database gives no hash to
 * guess passwords against offline, and someone who can write the database cannot put in a hash of a
 * password they chose, nor move one user's verifier to another, without the master key.
 */
export function createPasswords(deps: {
  hasher: PasswordHasher;
  dataKeys: Pick<DataKeyring, 'seal' | 'open'>;
  /** Told of every verifier that is not the server's (an alert, as for other credentials). */
  onBroken?: (broken: BrokenCredential) => Promise<void> | void;
}) {
  const { hasher, dataKeys } = deps;
  return {
    /** The verifier to store for the user's new password. */
    async verifierFor(userId: string, password: string): Promise<string> {
      return dataKeys.seal('instance', await hasher.hash(password), passwordContext(userId));
    },

    /**
     * Checks a password against the user's stored verifier. `tampered`: the verifier is not one this
     * server made for this user, which costs the same hashing time as a wrong password.
     */
    async check(userId: string, stored: string, password: string): Promise<PasswordCheck> {
      let passwordHash: string;
      try {
        passwordHash = (
          await dataKeys.open('instance', stored, passwordContext(userId))
        ).plaintext.toString();
      } catch (error) {
        if (!(error instanceof SealedValueError)) throw error;
        await hasher.verifyNothing(password);
        await deps.onBroken?.({ kind: 'password', id: userId, userId });
        return 'tampered';
      }
      return (await hasher.verify(passwordHash, password)) ? 'match' : 'mismatch';
    },

    verifyNothing: (password: string) => hasher.verifyNothing(password),
    assertCapacity: () => hasher.assertCapacity(),
  };
}

export type Passwords = ReturnType<typeof createPasswords>;
