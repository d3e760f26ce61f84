import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { newId } from '@bulwark/protocol';
import { SignJWT } from 'jose';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditActor } from '../audit/audit.types.js';
import type { WorkloadAudienceRule } from '../config.js';
import { AppError, NotFoundError } from '../errors.js';
import type { DataKeyring } from './data-keyring.js';
import type { WorkloadIdentityKeyRow, WorkloadIdentityKeysStore } from './workload-identity-keys.store.js';

/**
 * Bulwark as an OIDC issuer for its commands (SEC-4): an action that declares `workloadIdentity`
 * gets a JWT, minted at dispatch and sealed to its agent, that it exchanges with AWS STS, GCP STS or
 * Azure Entra for short-lived cloud credentials, so no long-lived cloud credential is stored anywhere.
 *
 * CRYPTO-1: the signing keys are their own, RS256 (the clouds' token services take RS256 or ES256,
 * not the Ed25519 of the server's other keys; Azure takes RS256 only), sealed at rest under the
 * instance data key, bound to their row. The JWKS publishes the public key derived from each sealed
 * private key, never the stored copy: someone who can write the database but not read the master key
 * cannot publish a key of their own and forge tokens the clouds would accept.
 */

export const WORKLOAD_IDENTITY_ALGORITHM = 'RS256';
/** The longest a token lives (the bound; AWS and GCP accept up to an hour, shorter is safer). */
export const MAX_TOKEN_LIFETIME_MS = 15 * 60_000;
/**
 * How long relying parties may cache the JWKS (Cache-Control). A rotated key is published at least
 * this long before it signs, so every cache holds it before it is needed.
 */
export const JWKS_MAX_AGE_SECONDS = 300;
/** Rotation defaults: published twice a cache lifetime ahead; the old key kept an hour after it stops. */
export const DEFAULT_PUBLISH_DELAY_MS = 2 * JWKS_MAX_AGE_SECONDS * 1000;
export const DEFAULT_OVERLAP_MS = 3600_000;
const RSA_BITS = 2048;

export class WorkloadIdentityUnavailableError extends AppError {
  constructor() {
    super(
      409,
      'workload_identity_unavailable',
      'This action asks for a workload identity, and this server is not an issuer: set BULWARK_PUBLIC_URL.',
    );
  }
}

export class AudienceNotAllowedError extends AppError {
  constructor(audience: string) {
    super(
      409,
      'audience_not_allowed',
      `This action asks for a workload identity for audience "${audience}", which this server does not allow for this organization (BULWARK_WORKLOAD_IDENTITY_AUDIENCES).`,
    );
  }
}

export class WorkloadKeyRotationError extends Error {}

export interface WorkloadKeyStatus {
  id: string;
  state: 'next' | 'signing' | 'retiring' | 'retired' | 'unusable';
  signsFrom: number;
  retiresAt: number | null;
}

/** Who the token speaks for: everything a trust policy may pin, none of it chosen by the agent alone. */
export interface WorkloadClaims {
  orgSlug: string;
  agentId: string;
  service: string;
  action: string;
  commandId: string;
  requester: string;
  audience: string;
  /** The token never outlives this instant (the command's own deadline). */
  notAfter: number;
}

/** `org:<slug>:agent:<id>:service:<name>:action:<name>`: trust policies pin it, exactly or by prefix. */
export const workloadSubject = (claims: Pick<WorkloadClaims, 'orgSlug' | 'agentId' | 'service' | 'action'>) =>
  `org:${claims.orgSlug}:agent:${claims.agentId}:service:${claims.service}:action:${claims.action}`;

const sealContext = (id: string) => `workload_identity_keys/${id}`;

export function createWorkloadIdentityService(deps: {
  store: WorkloadIdentityKeysStore;
  dataKeys: DataKeyring;
  /** The issuer: BULWARK_PUBLIC_URL. Unset: no issuer, no routes, no tokens. */
  issuer: string | undefined;
  audiences: WorkloadAudienceRule[];
  clock: () => number;
}) {
  const { store, dataKeys, clock } = deps;
  const issuer = deps.issuer?.replace(/\/+$/, '');
  /** Opened private keys by row id and sealed text: a row resealed or replaced is opened again. */
  const opened = new Map<string, { sealed: string; key: Promise<KeyObject> }>();

  function privateKeyOf(row: WorkloadIdentityKeyRow): Promise<KeyObject> {
    const cached = opened.get(row.id);
    if (cached?.sealed === row.private_key_sealed) return cached.key;
    const key = (async () => {
      const result = await dataKeys.open('instance', row.private_key_sealed, sealContext(row.id));
      if (result.stale) {
        const resealed = await dataKeys.seal('instance', result.plaintext, sealContext(row.id));
        await store.resealPrivateKey(row.id, row.private_key_sealed, resealed);
      }
      return createPrivateKey({ key: result.plaintext, format: 'der', type: 'pkcs8' });
    })();
    key.catch(() => opened.delete(row.id));
    opened.set(row.id, { sealed: row.private_key_sealed, key });
    return key;
  }

  async function newKeyRow(now: number, signsFrom: number): Promise<WorkloadIdentityKeyRow> {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: RSA_BITS });
    const id = newId('key', now);
    return {
      id,
      algorithm: WORKLOAD_IDENTITY_ALGORITHM,
      public_key: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
      private_key_sealed: await dataKeys.seal(
        'instance',
        privateKey.export({ format: 'der', type: 'pkcs8' }),
        sealContext(id),
      ),
      created_at: now,
      signs_from: signsFrom,
      retires_at: null,
    };
  }

  /** The published keys whose sealed private key opens; a row that does not is never published. */
  async function trustedKeys(now: number) {
    const keys: Array<{ row: WorkloadIdentityKeyRow; privateKey: KeyObject }> = [];
    for (const row of await store.published(now)) {
      const privateKey = await privateKeyOf(row).catch(() => undefined);
      if (privateKey) keys.push({ row, privateKey });
    }
    return keys;
  }

  /** Of the published keys (in signing order), the one that signs at `now`: the newest whose time has come. */
  const signerOf = <T extends { row: WorkloadIdentityKeyRow }>(keys: T[], now: number) =>
    keys.filter((key) => key.row.signs_from <= now).at(-1);

  /** The key that signs at `now`; the first one is made on first use. */
  async function signingKey(now: number) {
    let keys = await trustedKeys(now);
    if (keys.length === 0) {
      // First use. Two instances racing both add one; both are published, either signs: harmless.
      await store.insert(await newKeyRow(now, now));
      keys = await trustedKeys(now);
    }
    const signing = signerOf(keys, now);
    if (!signing) throw new Error('no workload-identity key may sign yet');
    return signing;
  }

  function requireIssuer(): string {
    if (!issuer) throw new NotFoundError('There is no such route.');
    return issuer;
  }

  return {
    enabled: issuer !== undefined,

    /** At start, with the issuer on: the first key, so the JWKS is never empty once relying parties look. */
    async ensureKey(): Promise<void> {
      if (issuer) await signingKey(clock());
    },

    /** Throws the refusal a command asking for `audience` in this organization gets, if any. */
    assertAllowed(orgSlug: string, audience: string): void {
      if (!issuer) throw new WorkloadIdentityUnavailableError();
      const allowed = deps.audiences.some(
        (rule) => rule.audience === audience && (rule.org === undefined || rule.org === orgSlug),
      );
      if (!allowed) throw new AudienceNotAllowedError(audience);
    },

    /** The OpenID Provider metadata relying parties read (OpenID Connect Discovery 1.0 §3). */
    discovery() {
      const iss = requireIssuer();
      return {
        issuer: iss,
        jwks_uri: `${iss}/.well-known/jwks.json`,
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: [WORKLOAD_IDENTITY_ALGORITHM],
        claims_supported: [
          'iss',
          'sub',
          'aud',
          'iat',
          'nbf',
          'exp',
          'jti',
          'org',
          'agent',
          'service',
          'action',
          'command',
          'requester',
        ],
      };
    },

    /** Every published key: the one signing, one ahead of its signing time, ones retiring. */
    async jwks() {
      requireIssuer();
      // Never makes a key (no GET changes state): `ensureKey` at start did.
      const keys = await trustedKeys(clock());
      return {
        keys: keys.map(({ row, privateKey }) => {
          const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
          return {
            kty: 'RSA',
            n: jwk.n!,
            e: jwk.e!,
            kid: row.id,
            alg: WORKLOAD_IDENTITY_ALGORITHM,
            use: 'sig',
          };
        }),
      };
    },

    /** Mints the command's token. The caller seals it to the agent and never stores or logs it. */
    async mint(claims: WorkloadClaims): Promise<{ token: string; keyId: string; expiresAt: number }> {
      if (!issuer) throw new WorkloadIdentityUnavailableError();
      const now = clock();
      const { row, privateKey } = await signingKey(now);
      const expiresAt = Math.min(now + MAX_TOKEN_LIFETIME_MS, claims.notAfter);
      const seconds = (ms: number) => Math.floor(ms / 1000);
      const token = await new SignJWT({
        org: claims.orgSlug,
        agent: claims.agentId,
        service: claims.service,
        action: claims.action,
        command: claims.commandId,
        requester: claims.requester,
      })
        .setProtectedHeader({ alg: WORKLOAD_IDENTITY_ALGORITHM, kid: row.id, typ: 'JWT' })
        .setIssuer(issuer)
        .setSubject(workloadSubject(claims))
        .setAudience(claims.audience)
        .setIssuedAt(seconds(now))
        .setNotBefore(seconds(now))
        .setExpirationTime(seconds(expiresAt))
        .setJti(claims.commandId)
        .sign(privateKey);
      return { token, keyId: row.id, expiresAt };
    },

    /**
     * Makes a new signing key, published at once, signing after `publishDelayMs` (relying parties'
     * cached JWKS have it by then); every older key leaves the JWKS `overlapMs` after the new one
     * starts signing (tokens they signed have expired by then). `revokePrevious`, for a key that
     * leaked: the new key signs now and the old ones are deleted (not merely retired, which a database
     * writer could undo); tokens they signed stop verifying. A backup from before still holds them:
     * after restoring one, revoke again.
     */
    async rotate(options: {
      publishDelayMs: number;
      overlapMs: number;
      revokePrevious: boolean;
      audit: AuditService;
      actor: AuditActor;
    }) {
      const now = clock();
      const publishDelayMs = options.revokePrevious ? 0 : options.publishDelayMs;
      if (!options.revokePrevious && publishDelayMs < JWKS_MAX_AGE_SECONDS * 1000)
        throw new WorkloadKeyRotationError(
          `the publish delay must be at least ${JWKS_MAX_AGE_SECONDS} s, how long relying parties may cache the JWKS`,
        );
      if (!options.revokePrevious && options.overlapMs < MAX_TOKEN_LIFETIME_MS)
        throw new WorkloadKeyRotationError(
          `the overlap must be at least ${MAX_TOKEN_LIFETIME_MS / 1000} s, the longest a token lives`,
        );
      const signsFrom = now + publishDelayMs;
      const retiresAt = options.revokePrevious ? now : signsFrom + options.overlapMs;
      const row = await newKeyRow(now, signsFrom);
      const retired = await options.audit.withEvents(async (trx, events) => {
        const count = options.revokePrevious
          ? await store.revokeAllBut(trx, row)
          : await store.rotate(trx, row, retiresAt, now);
        events.push({
          actor: options.actor,
          action: 'keys.workload_identity_rotated',
          target: { type: 'workload_identity_key', id: row.id },
          outcome: 'success',
          details: {
            signsFrom,
            previousLeaveAt: retiresAt,
            previousKeys: count,
            revokedPrevious: options.revokePrevious,
          },
        });
        return count;
      });
      return { keyId: row.id, signsFrom, previousRetireAt: retiresAt, previousKeys: retired };
    },

    /**
     * Every key and what it does at `now`, for `bulwark keys status`: `next` (published, signing
     * from `signsFrom`), `signing`, `retiring` (published until `retiresAt`, no longer signing),
     * `retired` (out of the JWKS), or `unusable` (its sealed private key does not open, so it is
     * never published: a row someone wrote into the database, or sealed under a lost key).
     */
    async status(now = clock()): Promise<WorkloadKeyStatus[]> {
      const trusted = await trustedKeys(now);
      const signer = signerOf(trusted, now)?.row.id;
      const published = new Set(trusted.map((key) => key.row.id));
      return (await store.list()).map((row) => ({
        id: row.id,
        signsFrom: row.signs_from,
        retiresAt: row.retires_at,
        state:
          row.retires_at !== null && row.retires_at <= now
            ? 'retired'
            : !published.has(row.id)
              ? 'unusable'
              : row.id === signer
                ? 'signing'
                : row.signs_from > now
                  ? 'next'
                  : 'retiring',
      }));
    },
  };
}

export type WorkloadIdentityService = ReturnType<typeof createWorkloadIdentityService>;
