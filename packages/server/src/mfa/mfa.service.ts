import type { JsonValue } from '@bulwark/protocol';
import { newId } from '@bulwark/protocol';
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from '@simplewebauthn/server';
import type { Kysely } from 'kysely';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import type { DB } from '../db/schema.js';
import { AppError, NotFoundError, ValidationError } from '../errors.js';
import type { CredentialSeals, CredentialSealsIn } from '../identity/credential-seals.js';
import type { DataKeyring } from '../secrets/data-keyring.js';
import { createMfaStore, type MfaFactorRow, type MfaStore } from './mfa.store.js';
import { createPasskeyCeremonies, type PasskeyFailure, type RelyingParty } from './passkeys.js';
import { newRecoveryCodes, normalizeRecoveryCode, recoveryCodeHash } from './recovery-codes.js';
import { acceptedStep, newTotpSeed, totpUri } from './totp.js';

/**
 * A user's second factors (MFA-1 to MFA-3): TOTP authenticators, passkeys and recovery codes. Seeds
 * are sealed by the instance data key, bound to their user and factor (DATA-1); recovery codes are
 * stored hashed; passkeys keep their public key and sign counter. Every code is accepted once, also
 * under concurrency: the use is a guarded update that exactly one of two racing requests wins; every
 * passkey challenge is taken once.
 */

export const TOTP_ISSUER = 'Bulwark';

/** Who the factor belongs to, as an audit event names them. */
export interface FactorOwner {
  userId: string;
  email: string;
}

export type SecondFactorMethod = 'totp' | 'recovery_code' | 'passkey';

/** What a person offers as their second factor: a code, or a passkey's answer to this session's challenge. */
export type SecondFactorProof =
  | { code: string }
  | { passkey: AuthenticationResponseJSON; sessionId: string; relyingParty: RelyingParty };

export type SecondFactorCheck =
  | { ok: true; method: SecondFactorMethod }
  | { ok: false; reason: 'wrong_code' | `passkey_${PasskeyFailure}` };

/** The passkey columns of a factor that is not one. */
const NO_PASSKEY = { credential_id: null, public_key: null, sign_count: null, transports: null } as const;

const seedContext = (userId: string, factorId: string) => `mfa/totp/${userId}/${factorId}`;

const factorTarget = (factor: Pick<MfaFactorRow, 'id' | 'name'>) => ({
  type: 'mfa_factor',
  id: factor.id,
  display: factor.name,
});

export function createMfaService(deps: {
  db: Kysely<DB>;
  dataKeys: DataKeyring;
  seals: CredentialSeals;
  audit: AuditService;
  clock: () => number;
}) {
  const { db, dataKeys, seals, audit, clock } = deps;
  const store = createMfaStore(db);
  const passkeys = createPasskeyCeremonies(store, seals, clock);

  const eventOf = (
    owner: FactorOwner,
    action:
      | 'mfa.factor_added'
      | 'mfa.factor_removed'
      | 'mfa.recovery_codes_generated'
      | 'mfa.recovery_code_used',
    target: { type: string; id: string; display?: string } | null,
    context: AuditRequestContext,
    details: { [key: string]: JsonValue } = {},
  ): AuditInput => ({
    actor: { type: 'user', id: owner.userId, display: owner.email },
    action,
    target,
    outcome: 'success',
    context,
    details,
  });

  /** A change of factors or codes, committed with its audit events (AUD-7). */
  const withEvents = <T>(
    work: (store: MfaStore, events: AuditInput[], seals: CredentialSealsIn) => Promise<T>,
  ) => audit.withEvents((tx, events) => work(createMfaStore(tx), events, seals.inTransaction(tx)));

  async function seedOf(factor: MfaFactorRow): Promise<string> {
    const context = seedContext(factor.user_id, factor.id);
    const opened = await dataKeys.open('instance', factor.secret_sealed!, context);
    const seed = opened.plaintext.toString('utf8');
    if (opened.stale) await store.reseal(factor.id, await dataKeys.seal('instance', seed, context));
    return seed;
  }

  /** Replaces the user's recovery codes with ten new ones and returns them, once. */
  async function issueRecoveryCodes(
    tx: MfaStore,
    events: AuditInput[],
    txSeals: CredentialSealsIn,
    owner: FactorOwner,
    context: AuditRequestContext,
  ): Promise<string[]> {
    const codes = newRecoveryCodes();
    const sealed = [];
    for (const code of codes) {
      const row = { user_id: owner.userId, code_hash: recoveryCodeHash(normalizeRecoveryCode(code)!) };
      sealed.push({ code_hash: row.code_hash, seal: await txSeals.seal('recovery-code', row) });
    }
    await tx.replaceRecoveryCodes(owner.userId, sealed, clock());
    events.push(eventOf(owner, 'mfa.recovery_codes_generated', null, context, { count: codes.length }));
    return codes;
  }

  async function useTotp(userId: string, code: string): Promise<boolean> {
    const now = clock();
    for (const factor of await store.factorsOf(userId)) {
      if (factor.type !== 'totp') continue;
      if (!(await seals.holds('mfa-factor', factor, { id: factor.id, userId }))) continue;
      const step = await acceptedStep(await seedOf(factor), code, now, factor.last_used_step);
      // A step already used (a replay, or the loser of two requests racing with one code) is refused.
      if (step !== undefined) return store.useStep(factor.id, step, now);
    }
    return false;
  }

  /**
   * Records a confirmed factor. A user's first factor comes with recovery codes: decided by whether
   * they have any (used or not), so two factors confirmed at once cannot both miss them.
   */
  async function factorAdded(
    tx: MfaStore,
    events: AuditInput[],
    txSeals: CredentialSealsIn,
    owner: FactorOwner,
    factor: MfaFactorRow,
    context: AuditRequestContext,
  ) {
    events.push(eventOf(owner, 'mfa.factor_added', factorTarget(factor), context, { type: factor.type }));
    return (await tx.hasRecoveryCodes(owner.userId))
      ? undefined
      : issueRecoveryCodes(tx, events, txSeals, owner, context);
  }

  async function useRecoveryCode(owner: FactorOwner, code: string, context: AuditRequestContext) {
    const normalized = normalizeRecoveryCode(code);
    if (!normalized) return false;
    // Checked before the transaction (its alarm is audited on a connection of its own); the guarded
    // update below still decides single use, and the row it updates is the one checked (same fields).
    const stored = await store.recoveryCode(owner.userId, recoveryCodeHash(normalized));
    if (!stored || !(await seals.holds('recovery-code', stored, { id: owner.userId, userId: owner.userId })))
      return false;
    return withEvents(async (tx, events) => {
      if (!(await tx.useRecoveryCode(owner.userId, recoveryCodeHash(normalized), clock()))) return false;
      const left = await tx.recoveryCodesLeft(owner.userId);
      // `remaining`: a key that names a code would be redacted by the audit guard, rightly.
      events.push(eventOf(owner, 'mfa.recovery_code_used', null, context, { remaining: left }));
      return true;
    });
  }

  return {
    isEnrolled: (userId: string) => store.isEnrolled(userId),
    enrolledAmong: (userIds: string[]) => store.enrolledAmong(userIds),

    async status(userId: string) {
      return {
        factors: await store.factorsOf(userId),
        recoveryCodesLeft: await store.recoveryCodesLeft(userId),
      };
    },

    /**
     * Starts a TOTP enrolment: a new seed, sealed at once, and the URI for the QR code. The factor
     * counts only once a code from it is confirmed; an unconfirmed earlier attempt is dropped.
     */
    async startTotp(owner: FactorOwner, name: string) {
      const now = clock();
      const id = newId('mfa', now);
      const seed = newTotpSeed();
      await store.deletePending(owner.userId);
      const factor: MfaFactorRow = {
        ...NO_PASSKEY,
        id,
        user_id: owner.userId,
        type: 'totp',
        name,
        secret_sealed: await dataKeys.seal('instance', seed, seedContext(owner.userId, id)),
        last_used_step: null,
        created_at: now,
        confirmed_at: null,
        last_used_at: null,
        seal: '',
      };
      factor.seal = await seals.seal('mfa-factor', factor);
      await store.insertFactor(factor);
      return { factorId: id, secret: seed, uri: totpUri(seed, owner.email, TOTP_ISSUER) };
    },

    /** Confirms an enrolment with a first code; the first factor of a user comes with recovery codes. */
    async confirmTotp(owner: FactorOwner, factorId: string, code: string, context: AuditRequestContext) {
      const factor = await store.factorOf(owner.userId, factorId);
      if (!factor) throw new NotFoundError('No such factor.');
      if (factor.confirmed_at !== null)
        throw new AppError(409, 'already_confirmed', 'This factor is already set up.');
      const now = clock();
      const step = await acceptedStep(await seedOf(factor), code, now, null);
      const wrong = () =>
        new ValidationError([
          { path: 'body.code', message: 'is not the current code of this authenticator' },
        ]);
      if (step === undefined) throw wrong();
      const confirmed = { ...factor, confirmed_at: now, last_used_at: now };
      return withEvents(async (tx, events, txSeals) => {
        if (!(await tx.confirm(factor.id, now, step))) throw wrong();
        return {
          factor: confirmed,
          recoveryCodes: await factorAdded(tx, events, txSeals, owner, confirmed, context),
        };
      });
    },

    /** Starts adding a passkey: options for the browser, with a challenge kept for this session. */
    startPasskey: (
      owner: FactorOwner & { displayName: string },
      sessionId: string,
      relyingParty: RelyingParty,
    ) => passkeys.registrationOptions(owner, sessionId, relyingParty),

    /** Finishes adding a passkey from the browser's answer; it counts at once (the ceremony proved it). */
    async finishPasskey(
      owner: FactorOwner,
      input: {
        sessionId: string;
        name: string;
        response: RegistrationResponseJSON;
        relyingParty: RelyingParty;
      },
      context: AuditRequestContext,
    ) {
      const credential = await passkeys.verifyRegistration(
        input.sessionId,
        input.response,
        input.relyingParty,
      );
      const now = clock();
      const factor: MfaFactorRow = {
        id: newId('mfa', now),
        user_id: owner.userId,
        type: 'webauthn',
        name: input.name,
        secret_sealed: null,
        last_used_step: null,
        created_at: now,
        confirmed_at: now,
        last_used_at: null,
        credential_id: credential.credentialId,
        public_key: credential.publicKey,
        sign_count: credential.signCount,
        transports: credential.transports,
        seal: '',
      };
      factor.seal = await seals.seal('mfa-factor', factor);
      try {
        return await withEvents(async (tx, events, txSeals) => {
          await tx.insertFactor(factor);
          return { factor, recoveryCodes: await factorAdded(tx, events, txSeals, owner, factor, context) };
        });
      } catch (error) {
        if (!(error instanceof AppError) && (await store.credentialExists(credential.credentialId)))
          throw new AppError(409, 'passkey_exists', 'This passkey is already registered.');
        throw error;
      }
    },

    /** Options for proving a passkey in this session (the second step of sign-in, or step-up). */
    passkeyChallenge: (userId: string, sessionId: string, relyingParty: RelyingParty) =>
      passkeys.authenticationOptions(userId, sessionId, relyingParty),

    /** Removes a factor; with the last one, the recovery codes go too (they would be a factor alone). */
    async removeFactor(owner: FactorOwner, factorId: string, context: AuditRequestContext) {
      const factor = await store.factorOf(owner.userId, factorId);
      if (!factor) throw new NotFoundError('No such factor.');
      return withEvents(async (tx, events) => {
        if (!(await tx.deleteFactor(owner.userId, factorId))) throw new NotFoundError('No such factor.');
        const left = (await tx.factorsOf(owner.userId)).length;
        if (left === 0) await tx.replaceRecoveryCodes(owner.userId, [], clock());
        events.push(
          eventOf(owner, 'mfa.factor_removed', factorTarget(factor), context, {
            factorsLeft: left,
            type: factor.type,
          }),
        );
        return { factorsLeft: left };
      });
    },

    async regenerateRecoveryCodes(owner: FactorOwner, context: AuditRequestContext) {
      if (!(await store.isEnrolled(owner.userId)))
        throw new AppError(
          409,
          'mfa_not_enrolled',
          'Set up an authenticator first; recovery codes stand in for it.',
        );
      return withEvents((tx, events, txSeals) => issueRecoveryCodes(tx, events, txSeals, owner, context));
    },

    /**
     * Checks a second factor: a code from one of the user's authenticators, an unused recovery code,
     * or a passkey's answer to this session's challenge. Says which method accepted it, or why not.
     */
    async verify(
      owner: FactorOwner,
      proof: SecondFactorProof,
      context: AuditRequestContext,
    ): Promise<SecondFactorCheck> {
      if ('passkey' in proof) {
        const check = await passkeys.verifyAssertion(
          owner.userId,
          proof.sessionId,
          proof.passkey,
          proof.relyingParty,
        );
        return check.ok ? { ok: true, method: 'passkey' } : { ok: false, reason: `passkey_${check.reason}` };
      }
      const accepted = /^\d{6}$/.test(proof.code)
        ? await useTotp(owner.userId, proof.code)
        : await useRecoveryCode(owner, proof.code, context);
      if (!accepted) return { ok: false, reason: 'wrong_code' };
      return { ok: true, method: /^\d{6}$/.test(proof.code) ? 'totp' : 'recovery_code' };
    },
  };
}

export type MfaService = ReturnType<typeof createMfaService>;
