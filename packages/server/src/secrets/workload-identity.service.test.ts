import { randomBytes } from 'node:crypto';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { manualClock, openAudit } from '../test-support/audit.js';
import { freshDatabasePerTest, type TestDatabase, testDatabases } from '../test-support/databases.js';
import { createDataKeyring } from './data-keyring.js';
import { createDataKeysStore } from './data-keys.store.js';
import { createLocalKeyProvider } from './key-provider.js';
import { createWorkloadIdentityService } from './workload-identity.service.js';
import { createWorkloadIdentityKeysStore } from './workload-identity-keys.store.js';

/**
 * A rotation's timeline (SEC-4), on the service's own clock: the new key is in the JWKS at once but
 * signs only after the publish delay. A relying party caches the JWKS for up to 300 s; a token
 * signed by a key it has not fetched yet is refused until its cache expires, so a new key that
 * signed at once would break every cloud sign-in for that long. The old key then stays published
 * for the overlap, so tokens it signed just before the switch still verify, and leaves after it.
 */

const ISSUER = 'https://bulwark.example';
const AUDIENCE = 'sts.amazonaws.com';
const PUBLISH_DELAY_MS = 600_000;
const OVERLAP_MS = 3_600_000;

describe.each(testDatabases())('workload-identity key rotation on $dialect', (target: TestDatabase) => {
  const database = freshDatabasePerTest(target);

  async function issuerAt(clock: ReturnType<typeof manualClock>) {
    const { audit, db } = await openAudit(database(), { clock: clock.now });
    const masterKeys = { current: randomBytes(32), previous: [] };
    const service = createWorkloadIdentityService({
      store: createWorkloadIdentityKeysStore(db),
      dataKeys: createDataKeyring({
        store: createDataKeysStore(db),
        provider: createLocalKeyProvider(masterKeys, () => masterKeys),
        clock: clock.now,
      }),
      issuer: ISSUER,
      audiences: [{ org: undefined, audience: AUDIENCE }],
      clock: clock.now,
    });
    await service.ensureKey();
    return { service, audit };
  }

  const claims = (commandId: string, notAfter: number) => ({
    orgSlug: 'acme',
    agentId: 'agt_1',
    service: 'deploy',
    action: 'assume',
    commandId,
    requester: 'usr_owner',
    audience: AUDIENCE,
    notAfter,
  });

  it('publishes the new key at once, signs with it only after the publish delay, drops the old one after the overlap', async () => {
    const clock = manualClock(Date.UTC(2026, 10, 22, 9));
    const { service, audit } = await issuerAt(clock);
    const kids = async () => (await service.jwks()).keys.map((key) => key.kid);
    /** Mints at the clock's time; returns the signing key's id from the header and checks it verifies. */
    const signer = async (commandId: string) => {
      const { token, keyId } = await service.mint(claims(commandId, clock.now() + 60_000));
      const { kid } = decodeProtectedHeader(token);
      expect(kid).toBe(keyId);
      // As a relying party with the JWKS of this moment: the signer is in it.
      await jwtVerify(token, createLocalJWKSet(await service.jwks()), {
        issuer: ISSUER,
        audience: AUDIENCE,
        currentDate: new Date(clock.now()),
      });
      return kid;
    };

    const [oldKid] = await kids();
    expect(await signer('cmd_before')).toBe(oldKid);

    const rotated = await service.rotate({
      publishDelayMs: PUBLISH_DELAY_MS,
      overlapMs: OVERLAP_MS,
      revokePrevious: false,
      audit,
      actor: { type: 'system', id: 'cli', display: 'bulwark keys' },
    });
    const newKid = rotated.keyId;
    const rotatedAt = clock.now();
    expect(rotated.signsFrom).toBe(rotatedAt + PUBLISH_DELAY_MS);
    expect(rotated.previousRetireAt).toBe(rotatedAt + PUBLISH_DELAY_MS + OVERLAP_MS);

    // Both published at once: relying parties that fetch the JWKS now hold the new key in time.
    expect(await kids()).toEqual([oldKid, newKid]);
    // The old key still signs, right after the rotation and to the last millisecond of the delay.
    expect(await signer('cmd_just_after')).toBe(oldKid);
    expect((await service.status()).map((key) => [key.id, key.state])).toEqual([
      [oldKid, 'signing'],
      [newKid, 'next'],
    ]);
    clock.set(rotated.signsFrom - 1);
    expect(await signer('cmd_last_old')).toBe(oldKid);
    const lastOld = await service.mint(claims('cmd_last_old_token', clock.now() + 15 * 60_000));

    // The delay is over: the new key signs; the old one stays in the JWKS for the overlap.
    clock.set(rotated.signsFrom);
    expect(await signer('cmd_first_new')).toBe(newKid);
    expect(await kids()).toEqual([oldKid, newKid]);
    expect((await service.status()).map((key) => key.state)).toEqual(['retiring', 'signing']);
    // A token the old key signed just before the switch still verifies while it lives.
    await jwtVerify(lastOld.token, createLocalJWKSet(await service.jwks()), {
      audience: AUDIENCE,
      currentDate: new Date(clock.now()),
    });

    clock.set(rotated.previousRetireAt - 1);
    expect(await kids()).toEqual([oldKid, newKid]);
    clock.set(rotated.previousRetireAt);
    expect(await kids()).toEqual([newKid]);
    expect(await signer('cmd_after_overlap')).toBe(newKid);
    expect((await service.status()).map((key) => [key.id, key.state, key.retiresAt])).toEqual([
      [oldKid, 'retired', rotated.previousRetireAt],
      [newKid, 'signing', null],
    ]);
  });
});
