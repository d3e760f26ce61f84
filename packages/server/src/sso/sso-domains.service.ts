import { randomBytes } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { type Caller, callerEvent } from '../access/caller.js';
import type { Transact } from '../audit/audited-transaction.js';
import { AppError, NotFoundError } from '../errors.js';
import { createSsoStore, type SsoStore } from './sso.store.js';

/** Where the challenge is published: a TXT record under the domain. */
export const challengeName = (domain: string) => `_bulwark-challenge.${domain}`;
const challengeValue = (challenge: string) => `bulwark-domain-verification=${challenge}`;

export interface DomainView {
  domain: string;
  verified: boolean;
  verifiedAt: number | null;
  /** The TXT record to publish: its name and its value. */
  txtName: string;
  txtValue: string;
}

const viewOf = (row: { domain: string; challenge: string; verified_at: number | null }): DomainView => ({
  domain: row.domain,
  verified: row.verified_at !== null,
  verifiedAt: row.verified_at,
  txtName: challengeName(row.domain),
  txtValue: challengeValue(row.challenge),
});

/**
 * The email domains an organization has proved it holds (SSO-4). A sign-in that starts from an
 * email address is sent to an organization's identity providers only when that organization has
 * verified the address's domain by publishing a TXT record of its own challenge; a domain nobody
 * verified routes nowhere, and a domain one organization verified cannot be verified by another.
 */
export function createSsoDomainsService(deps: {
  store: SsoStore;
  transact: Transact;
  clock: () => number;
  /** The DNS servers asked; empty: the system's. */
  dnsServers: string[];
  timeoutSeconds: number;
}) {
  const { store, transact, clock } = deps;

  async function txtRecords(name: string): Promise<string[]> {
    const resolver = new Resolver({ timeout: deps.timeoutSeconds * 1000, tries: 2 });
    if (deps.dnsServers.length > 0) resolver.setServers(deps.dnsServers);
    try {
      // A record may be split into strings of 255 characters: each is joined back.
      return (await resolver.resolveTxt(name)).map((chunks) => chunks.join(''));
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA') return [];
      throw new AppError(
        503,
        'dns_unavailable',
        `DNS did not answer for ${name} (${code ?? 'error'}); try again in a moment.`,
      );
    }
  }

  return {
    list: async (orgId: string) => (await store.domains(orgId)).map(viewOf),

    async add(caller: Caller, domain: string): Promise<DomainView> {
      return transact(async (trx, events) => {
        const tx = createSsoStore(trx);
        if (await tx.domain(caller.org.id, domain))
          throw new AppError(409, 'domain_exists', `${domain} is claimed by this organization already.`);
        const row = {
          org_id: caller.org.id,
          domain,
          challenge: randomBytes(24).toString('base64url'),
          created_by: caller.userId,
          created_at: clock(),
          verified_at: null,
        };
        await tx.insertDomain(row);
        events.push(callerEvent(caller, 'sso.domain_added', { type: 'domain', id: domain, display: domain }));
        return viewOf(row);
      });
    },

    /** Looks the challenge up in DNS now; verified when the TXT record holds it. */
    async verify(caller: Caller, domain: string): Promise<DomainView> {
      const row = await store.domain(caller.org.id, domain);
      if (!row) throw new NotFoundError('This organization has not claimed this domain.');
      if (row.verified_at !== null) return viewOf(row);
      const records = await txtRecords(challengeName(domain));
      if (!records.includes(challengeValue(row.challenge)))
        throw new AppError(
          409,
          'domain_not_verified',
          `No TXT record "${challengeValue(row.challenge)}" at ${challengeName(domain)} yet${records.length > 0 ? ` (found ${records.length} other record${records.length === 1 ? '' : 's'})` : ''}. DNS changes can take a while to appear.`,
        );
      const taken = () => new AppError(409, 'domain_taken', `${domain} is verified by another organization.`);
      try {
        return await transact(async (trx, events) => {
          const tx = createSsoStore(trx);
          const holder = await tx.verifiedOwnerOf(domain);
          if (holder && holder.id !== caller.org.id) throw taken();
          const at = clock();
          await tx.markVerified(caller.org.id, domain, at);
          events.push(
            callerEvent(caller, 'sso.domain_verified', { type: 'domain', id: domain, display: domain }),
          );
          return viewOf({ ...row, verified_at: at });
        });
      } catch (error) {
        // Two organizations verifying at once: the unique index lets one through; the other is told so.
        if (!(error instanceof AppError) && (await store.verifiedOwnerOf(domain))?.id !== caller.org.id)
          throw taken();
        throw error;
      }
    },

    async remove(caller: Caller, domain: string): Promise<void> {
      await transact(async (trx, events) => {
        if (!(await createSsoStore(trx).deleteDomain(caller.org.id, domain)))
          throw new NotFoundError('This organization has not claimed this domain.');
        events.push(
          callerEvent(caller, 'sso.domain_removed', { type: 'domain', id: domain, display: domain }),
        );
      });
    },

    /** The organization whose identity providers an email address's sign-in goes to, if any. */
    async ownerOf(email: string): Promise<{ id: string; slug: string } | undefined> {
      const domain = email
        .slice(email.lastIndexOf('@') + 1)
        .trim()
        .toLowerCase();
      return domain ? store.verifiedOwnerOf(domain) : undefined;
    },
  };
}

export type SsoDomainsService = ReturnType<typeof createSsoDomainsService>;
