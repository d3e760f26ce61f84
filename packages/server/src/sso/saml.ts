import { type CacheProvider, SAML, ValidateInResponseTo } from '@node-saml/node-saml';
import { DOMParser } from '@xmldom/xmldom';
import { SsoError } from './oidc.js';
import type { SamlConfig } from './sso-config.js';

/**
 * The SAML 2.0 service provider (SSO-2), on @node-saml/node-saml. A response is taken only when:
 * its assertion is signed by a key of the IdP's metadata (a signed response around an unsigned
 * assertion is not enough); it answers the AuthnRequest this browser's sign-in sent (InResponseTo),
 * unless the connection accepts IdP-initiated responses; its audience is this SP; its subject
 * confirmation's Recipient is this connection's ACS address (node-saml does not check it); it is
 * within NotBefore / NotOnOrAfter, with `SAML_CLOCK_SKEW_MS` of skew; and its assertion ID was never
 * taken before (the replay cache, in the database, so every instance shares it). One assertion per
 * response: a second one (XML signature wrapping) is refused by node-saml.
 */

/** How far the IdP's clock may be from ours, either way. */
export const SAML_CLOCK_SKEW_MS = 60_000;
/** How long a sign-in may take at the IdP: the AuthnRequest's validity. */
const REQUEST_TTL_MS = 10 * 60_000;

const ASSERTION = 'urn:oasis:names:tc:SAML:2.0:assertion';
const METADATA = 'urn:oasis:names:tc:SAML:2.0:metadata';
const SIGNATURE = 'http://www.w3.org/2000/09/xmldsig#';
const REDIRECT_BINDING = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';

/** Where this SP lives for a connection: its entity ID (also its metadata) and its ACS address. */
export interface SpAddresses {
  entityId: string;
  acsUrl: string;
}

export interface SamlProof {
  issuer: string;
  subject: string;
  claims: { email?: string; name?: string };
  groups: string[];
  /** When the person authenticated at the IdP (AuthnStatement), for step-up. */
  authnInstant: number | undefined;
  assertionId: string;
  /** Until when the assertion is valid: how long its ID is kept in the replay cache. */
  validUntil: number;
}

/** A cache that knows exactly one AuthnRequest: the one this browser's sign-in sent. */
function onlyRequest(requestId: string | null): CacheProvider & { saved: string | undefined } {
  return {
    saved: undefined,
    async saveAsync(key, value) {
      this.saved = key;
      return { value, createdAt: Date.now() };
    },
    // When it was made, as node-saml wants it; its age is checked by the sign-in record's own expiry.
    getAsync: async (key) => (requestId !== null && key === requestId ? new Date().toISOString() : null),
    removeAsync: async (key) => key,
  };
}

const text = (value: unknown): string | undefined => {
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && typeof value[0] === 'string') return value[0];
  return undefined;
};
const strings = (value: unknown): string[] =>
  (Array.isArray(value) ? value : value === undefined ? [] : [value]).filter(
    (item): item is string => typeof item === 'string',
  );

/** Reads an IdP's metadata XML: its entity ID, Redirect-binding SSO address and signing certificates. */
export function parseIdpMetadata(xml: string): { entityId: string; ssoUrl: string; certificates: string[] } {
  const problems: string[] = [];
  const document = new DOMParser({
    errorHandler: {
      error: (message: string) => problems.push(message),
      fatalError: (message: string) => problems.push(message),
    },
  }).parseFromString(xml, 'text/xml');
  const descriptor = document?.getElementsByTagNameNS(METADATA, 'EntityDescriptor')[0];
  if (problems.length > 0 || !descriptor)
    throw new SsoError('saml_metadata_invalid', 'This is not SAML metadata: no EntityDescriptor.');
  const idp = descriptor.getElementsByTagNameNS(METADATA, 'IDPSSODescriptor')[0];
  if (!idp)
    throw new SsoError(
      'saml_metadata_invalid',
      'The metadata describes no identity provider (IDPSSODescriptor).',
    );
  const sso = Array.from(idp.getElementsByTagNameNS(METADATA, 'SingleSignOnService')).find(
    (service) => service.getAttribute('Binding') === REDIRECT_BINDING,
  );
  if (!sso?.getAttribute('Location'))
    throw new SsoError(
      'saml_metadata_invalid',
      'The identity provider offers no HTTP-Redirect SSO endpoint.',
    );
  const certificates = Array.from(idp.getElementsByTagNameNS(METADATA, 'KeyDescriptor'))
    .filter((key) => (key.getAttribute('use') ?? 'signing') === 'signing')
    .flatMap((key) => Array.from(key.getElementsByTagNameNS(SIGNATURE, 'X509Certificate')))
    .map((node) => (node.textContent ?? '').replace(/\s+/g, ''))
    .filter((body) => body.length > 0)
    .map(
      (body) =>
        `-----BEGIN CERTIFICATE-----\n${body.match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----`,
    );
  if (certificates.length === 0)
    throw new SsoError('saml_metadata_invalid', 'The metadata holds no signing certificate.');
  return {
    entityId: descriptor.getAttribute('entityID') ?? '',
    ssoUrl: sso.getAttribute('Location')!,
    certificates,
  };
}

/** What node-saml leaves unchecked, read from the assertion it verified. */
function verifiedAssertionFacts(assertionXml: string) {
  const document = new DOMParser().parseFromString(assertionXml, 'text/xml');
  const assertion = document.getElementsByTagNameNS(ASSERTION, 'Assertion')[0];
  const recipients = Array.from(document.getElementsByTagNameNS(ASSERTION, 'SubjectConfirmationData')).map(
    (node) => node.getAttribute('Recipient'),
  );
  const statement = document.getElementsByTagNameNS(ASSERTION, 'AuthnStatement')[0];
  const instant = statement?.getAttribute('AuthnInstant');
  // The latest of the assertion's validity ends (Conditions, SubjectConfirmationData).
  const ends = [
    ...Array.from(document.getElementsByTagNameNS(ASSERTION, 'Conditions')),
    ...Array.from(document.getElementsByTagNameNS(ASSERTION, 'SubjectConfirmationData')),
  ]
    .map((node) => Date.parse(node.getAttribute('NotOnOrAfter') ?? ''))
    .filter((time) => !Number.isNaN(time));
  return {
    id: assertion?.getAttribute('ID') ?? '',
    recipients,
    authnInstant: instant ? Date.parse(instant) : undefined,
    notOnOrAfter: ends.length > 0 ? Math.max(...ends) : undefined,
  };
}

function explain(error: unknown): SsoError {
  if (error instanceof SsoError) return error;
  const message = String((error as Error)?.message ?? error).slice(0, 300);
  if (/InResponseTo/i.test(message))
    return new SsoError(
      'saml_unsolicited',
      'This SAML response answers no sign-in started here (IdP-initiated, or replayed); start the sign-in from Bulwark.',
    );
  return new SsoError(
    'saml_response_refused',
    `The identity provider's SAML response was refused: ${message}.`,
  );
}

export function createSamlServiceProvider(options: { clock: () => number }) {
  const { clock } = options;

  function sp(config: SamlConfig, addresses: SpAddresses, cache: CacheProvider, forceAuthn = false) {
    return new SAML({
      callbackUrl: addresses.acsUrl,
      entryPoint: config.idpSsoUrl,
      issuer: addresses.entityId,
      audience: addresses.entityId,
      idpIssuer: config.idpEntityId,
      idpCert: config.idpCertificates,
      wantAssertionsSigned: true,
      wantAuthnResponseSigned: false,
      acceptedClockSkewMs: SAML_CLOCK_SKEW_MS,
      validateInResponseTo: config.allowIdpInitiated
        ? ValidateInResponseTo.ifPresent
        : ValidateInResponseTo.always,
      requestIdExpirationPeriodMs: REQUEST_TTL_MS,
      cacheProvider: cache,
      identifierFormat: config.nameIdFormat,
      disableRequestedAuthnContext: true,
      forceAuthn,
      signatureAlgorithm: 'sha256',
    });
  }

  return {
    metadata: (config: SamlConfig, addresses: SpAddresses) =>
      sp(config, addresses, onlyRequest(null)).generateServiceProviderMetadata(null, null),

    /** Where to send the browser (HTTP-Redirect binding), and the AuthnRequest ID its answer must carry. */
    async start(config: SamlConfig, addresses: SpAddresses, relayState: string, forceAuthn: boolean) {
      const cache = onlyRequest(null);
      const url = await sp(config, addresses, cache, forceAuthn).getAuthorizeUrlAsync(
        relayState,
        undefined,
        {},
      );
      if (!cache.saved) throw new Error('node-saml made an AuthnRequest without an ID');
      return { url, requestId: cache.saved };
    },

    /** Checks a posted response against the one AuthnRequest it must answer (null: none, IdP-initiated). */
    async finish(
      config: SamlConfig,
      addresses: SpAddresses,
      samlResponse: string,
      requestId: string | null,
    ): Promise<SamlProof> {
      let profile: Awaited<ReturnType<SAML['validatePostResponseAsync']>>['profile'];
      try {
        ({ profile } = await sp(config, addresses, onlyRequest(requestId)).validatePostResponseAsync({
          SAMLResponse: samlResponse,
        }));
      } catch (error) {
        throw explain(error);
      }
      const assertionXml = profile?.getAssertionXml?.();
      if (!profile || !assertionXml)
        throw new SsoError('saml_no_assertion', 'The SAML response holds no assertion.');
      const facts = verifiedAssertionFacts(assertionXml);
      if (
        facts.recipients.length === 0 ||
        facts.recipients.some((recipient) => recipient !== addresses.acsUrl)
      )
        throw new SsoError(
          'saml_wrong_recipient',
          `The assertion is addressed to another service (Recipient), not to ${addresses.acsUrl}.`,
        );
      if (!facts.id) throw new SsoError('saml_no_assertion', 'The assertion has no ID.');
      const now = clock();
      return {
        issuer: config.idpEntityId,
        subject: profile.nameID,
        claims: {
          ...(text(profile[config.emailAttribute]) ? { email: text(profile[config.emailAttribute])! } : {}),
          ...(text(profile[config.nameAttribute]) ? { name: text(profile[config.nameAttribute])! } : {}),
        },
        groups: strings(profile[config.groupsAttribute]),
        authnInstant: facts.authnInstant,
        assertionId: facts.id,
        // Kept at least as long as a sign-in may take, whatever the assertion says of itself.
        validUntil: Math.max(facts.notOnOrAfter ?? 0, now + REQUEST_TTL_MS) + SAML_CLOCK_SKEW_MS,
      };
    },
  };
}

export type SamlServiceProvider = ReturnType<typeof createSamlServiceProvider>;
