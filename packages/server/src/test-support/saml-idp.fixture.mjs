// A real SAML 2.0 identity provider (samlify) in its own process, for the SAML tests. It signs in
// whoever the test names next (POST /control/account) at once, with no page of its own, and answers
// with the auto-submitting form a browser would post to the service provider's ACS URL. It can be
// told to answer the way a broken or hostile provider would (POST /control/tamper).
//
// argv: <port> <config file>; the config file holds the signing key and certificate, a second key
// pair that is not in the metadata, the service provider and whether the Response is signed too.
// Prints `listening <base url>` once it accepts connections; stops on SIGTERM or when its standard
// input closes.
//
// Routes:
//   GET  /metadata                the IdP's metadata (entity ID = this URL)
//   GET  /sso                     HTTP-Redirect binding: SAMLRequest (deflated) + RelayState
//   POST /sso                     HTTP-POST binding: SAMLRequest (base64) + RelayState, form-encoded
//   POST /control/account         {nameId, email?, name?, groups?, nameIdFormat?}: who signs in next
//   POST /control/tamper          {mode, victim?}: how the next responses are made (see `respond`)
//   POST /control/sp              {entityId, acsUrl}: the one service provider this IdP serves
//   POST /control/signing         {response: boolean}: whether the Response is signed besides the Assertion
//   POST /control/unsolicited     {acsUrl, relayState?}: the form of an IdP-initiated response (no InResponseTo)
//   GET  /control/last-response   the last SAMLResponse sent, base64, as posted
//   GET  /control/last-request    the last AuthnRequest received: {id, issuer, acsUrl, forceAuthn, ...}
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import samlify from 'samlify';

const { IdentityProvider, ServiceProvider, Constants, Extractor, setSchemaValidator } = samlify;

const [port, configFile] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configFile, 'utf8'));

// The IdP is a test fixture: what it is sent comes from the service provider under test, whose own
// messages are not what these tests judge. samlify refuses to parse without a schema validator.
setSchemaValidator({ validate: () => Promise.resolve('skipped') });

const POST = Constants.namespace.binding.post;
const REDIRECT = Constants.namespace.binding.redirect;
const EMAIL_FORMAT = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';
/** An audience and an ACS URL of a service provider that is not the one under test. */
const ELSEWHERE = {
  entityId: 'https://another-sp.example.test/saml/metadata',
  acsUrl: 'https://another-sp.example.test/saml/acs',
};

let sp = config.sp;
let signResponse = config.signResponse;
let account = { nameId: 'alice@idp.test', email: 'alice@idp.test', name: 'Alice', groups: [] };
let tamper = { mode: 'none' };
let lastResponse = '';
let lastRequest = null;

// The whole Response, filled in by `fill`: `{Name}` in an attribute's value drops the attribute when
// the value is undefined (InResponseTo of an unsolicited response); `{Attributes}` is XML. (Not
// `{AttributeStatement}`: samlify fills that one itself from `loginResponseTemplate.attributes`.)
const RESPONSE_TEMPLATE = [
  '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"',
  ' ID="{ID}" Version="2.0" IssueInstant="{IssueInstant}" Destination="{Destination}" InResponseTo="{InResponseTo}">',
  '<saml:Issuer>{Issuer}</saml:Issuer>',
  '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>',
  '<saml:Assertion ID="{AssertionID}" Version="2.0" IssueInstant="{IssueInstant}">',
  '<saml:Issuer>{Issuer}</saml:Issuer>',
  '<saml:Subject>',
  '<saml:NameID Format="{NameIDFormat}">{NameID}</saml:NameID>',
  '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">',
  '<saml:SubjectConfirmationData NotOnOrAfter="{NotOnOrAfter}" Recipient="{Recipient}" InResponseTo="{InResponseTo}"/>',
  '</saml:SubjectConfirmation>',
  '</saml:Subject>',
  '<saml:Conditions NotBefore="{NotBefore}" NotOnOrAfter="{NotOnOrAfter}">',
  '<saml:AudienceRestriction><saml:Audience>{Audience}</saml:Audience></saml:AudienceRestriction>',
  '</saml:Conditions>',
  '<saml:AuthnStatement AuthnInstant="{AuthnInstant}" SessionIndex="{SessionIndex}">',
  '<saml:AuthnContext>',
  '<saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef>',
  '</saml:AuthnContext>',
  '</saml:AuthnStatement>',
  '{Attributes}',
  '</saml:Assertion>',
  '</samlp:Response>',
].join('');

const server = http.createServer();
server.listen(Number(port), '127.0.0.1', () => {
  const base = `http://127.0.0.1:${server.address().port}`;
  const entityId = `${base}/metadata`;
  const ssoUrl = `${base}/sso`;
  const identityProvider = (key) =>
    IdentityProvider({
      entityID: entityId,
      privateKey: key.key,
      signingCert: key.cert,
      nameIDFormat: [EMAIL_FORMAT],
      singleSignOnService: [
        { Binding: REDIRECT, Location: ssoUrl },
        { Binding: POST, Location: ssoUrl },
      ],
      // `attributes` is required beside `context`; ours are in the template already.
      loginResponseTemplate: { context: RESPONSE_TEMPLATE, attributes: [] },
    });
  const idp = identityProvider(config.signing);
  // Same entity ID and endpoints, but a key pair the metadata never published.
  const impostor = identityProvider(config.other);

  server.on('request', async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', base);
      const route = `${req.method} ${url.pathname}`;
      if (route === 'GET /metadata') {
        res.setHeader('content-type', 'application/samlmetadata+xml');
        return res.end(idp.getMetadata());
      }
      if (route === 'GET /sso' || route === 'POST /sso') {
        const binding = req.method === 'GET' ? 'redirect' : 'post';
        const params = req.method === 'GET' ? url.searchParams : new URLSearchParams(await body(req));
        return await signOn(res, binding, params);
      }
      if (route === 'POST /control/account') {
        account = JSON.parse(await body(req));
        return res.end('ok');
      }
      if (route === 'POST /control/tamper') {
        tamper = JSON.parse(await body(req));
        return res.end('ok');
      }
      if (route === 'POST /control/sp') {
        const { entityId: spEntityId, acsUrl } = JSON.parse(await body(req));
        sp = { entityId: spEntityId, acsUrl };
        return res.end('ok');
      }
      if (route === 'POST /control/signing') {
        signResponse = JSON.parse(await body(req)).response === true;
        return res.end('ok');
      }
      if (route === 'POST /control/unsolicited') {
        const { acsUrl, relayState } = JSON.parse(await body(req));
        const samlResponse = await respond({ inResponseTo: undefined, acsUrl });
        return html(res, postForm(acsUrl, samlResponse, relayState));
      }
      if (route === 'GET /control/last-response') return res.end(lastResponse);
      if (route === 'GET /control/last-request') {
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify(lastRequest));
      }
      res.statusCode = 404;
      res.end('not found');
    } catch (error) {
      res.statusCode = 500;
      res.end(String(error?.stack ?? error));
    }
  });

  process.stdout.write(`listening ${base}\n`);

  /** Reads the AuthnRequest, signs in the next account at once and posts the answer to the SP. */
  async function signOn(res, binding, params) {
    const SAMLRequest = params.get('SAMLRequest');
    const RelayState = params.get('RelayState') ?? undefined;
    if (!SAMLRequest) return refuse(res, 'no SAMLRequest');
    // saml-bindings §3.5.4: the POST binding's message is base64 XML, not deflated (node-saml deflates
    // it unless told skipRequestCompression).
    if (
      binding === 'post' &&
      !Buffer.from(SAMLRequest, 'base64').toString('utf8').trimStart().startsWith('<')
    )
      return refuse(res, 'the SAMLRequest of the HTTP-POST binding is not base64 XML (deflated?)');
    let parsed;
    try {
      parsed = await idp.parseLoginRequest(spEntity(sp.acsUrl), binding, {
        query: { SAMLRequest, RelayState },
        body: { SAMLRequest, RelayState },
      });
    } catch (error) {
      return refuse(res, `unreadable AuthnRequest (${binding} binding): ${error?.message ?? error}`);
    }
    const { request } = Extractor.extract(parsed.samlContent, [
      {
        key: 'request',
        localPath: ['AuthnRequest'],
        attributes: [
          'ID',
          'Destination',
          'AssertionConsumerServiceURL',
          'ForceAuthn',
          'IsPassive',
          'ProtocolBinding',
        ],
      },
    ]);
    lastRequest = {
      binding,
      id: request.id,
      issuer: parsed.extract.issuer,
      destination: request.destination ?? null,
      acsUrl: request.assertionConsumerServiceUrl ?? null,
      protocolBinding: request.protocolBinding ?? null,
      forceAuthn: request.forceAuthn === 'true' || request.forceAuthn === '1',
      isPassive: request.isPassive === 'true' || request.isPassive === '1',
      relayState: RelayState ?? null,
      xml: parsed.samlContent,
    };
    // As a real IdP does: only the registered service provider, and only to its registered ACS URL.
    if (lastRequest.issuer !== sp.entityId)
      return refuse(res, `unknown service provider ${lastRequest.issuer}`);
    if (lastRequest.acsUrl && lastRequest.acsUrl !== sp.acsUrl)
      return refuse(res, `ACS URL ${lastRequest.acsUrl} is not the registered ${sp.acsUrl}`);
    const samlResponse = await respond({ inResponseTo: request.id, acsUrl: sp.acsUrl });
    return html(res, postForm(sp.acsUrl, samlResponse, RelayState));
  }

  /**
   * The base64 SAMLResponse for the current account, made as the current tamper mode says:
   * - none: the Assertion signed (and the Response too while signing.response is on);
   * - unsigned: neither signed;
   * - expired: NotBefore and IssueInstant 2 hours ago, NotOnOrAfter 1 hour ago; signed;
   * - wrong-audience: the Audience another service provider's; signed;
   * - wrong-recipient: SubjectConfirmationData Recipient another ACS URL (Destination is right); signed;
   * - other-key: signed with a key pair that is not the one in the metadata (its certificate in KeyInfo);
   * - wrapping: XML signature wrapping, the XSW3 variant: an unsigned Assertion for the victim
   *   (default admin@example.test) is put before the account's validly signed one, as a sibling
   *   under the Response. The signature still references (by ID) and verifies the second one; a
   *   service provider that checks "some signature is valid" and then reads the first Assertion
   *   signs the victim in. The Response is never signed here: an attacker could not re-sign it;
   * - wrapping-extensions: the XSW7 variant: the validly signed Assertion moved into
   *   <samlp:Extensions> of the Response and the victim's unsigned Assertion in its usual place, so
   *   /Response/Assertion is the victim's (though in document order the signed one, in Extensions
   *   right after the Response's Issuer, comes first). Not schema-valid: Extensions takes ##other;
   * - comment-injection: the Assertion (and Response) signed over the account's NameID, then an XML
   *   comment put into it (CVE-2017-11428 family): `admin@example.test.evil.test` becomes
   *   `admin@example.test<!---->.evil.test`. Exclusive c14n drops comments, so both signatures still
   *   verify, while a parser reading the first text node reads `admin@example.test`. The comment goes
   *   after the victim (which must be a proper prefix of the NameID), by default after the local part
   *   and the first two labels of the domain. Attribute values equal to the NameID get it too.
   */
  async function respond({ inResponseTo, acsUrl }) {
    const { mode, victim } = tamper;
    const now = Date.now();
    const at = (minutes) => new Date(now + minutes * 60_000).toISOString();
    const values = {
      InResponseTo: inResponseTo,
      Destination: acsUrl,
      Recipient: mode === 'wrong-recipient' ? ELSEWHERE.acsUrl : acsUrl,
      Audience: mode === 'wrong-audience' ? ELSEWHERE.entityId : sp.entityId,
      IssueInstant: mode === 'expired' ? at(-120) : at(0),
      NotBefore: mode === 'expired' ? at(-120) : at(0),
      NotOnOrAfter: mode === 'expired' ? at(-60) : at(5),
      AuthnInstant: at(0),
      Issuer: entityId,
    };
    const signed = async ({ by = idp, response = signResponse } = {}) => {
      const made = await by.createLoginResponse(spEntity(acsUrl, response), null, 'post', {}, (template) => ({
        context: fill(template, { ...values, ...ids(), ...subject(account) }),
      }));
      return Buffer.from(made.context, 'base64').toString('utf8');
    };

    let xml;
    switch (mode) {
      case 'unsigned':
        xml = fill(RESPONSE_TEMPLATE, { ...values, ...ids(), ...subject(account) });
        break;
      case 'other-key':
        xml = await signed({ by: impostor });
        break;
      case 'wrapping':
      case 'wrapping-extensions': {
        const genuine = await signed({ response: false });
        const evil = assertionOf(
          fill(RESPONSE_TEMPLATE, { ...values, ...ids(), ...subject(victimAccount(victim)) }),
        );
        const signedAssertion = assertionOf(genuine);
        xml =
          mode === 'wrapping'
            ? genuine.replace(signedAssertion, () => evil + signedAssertion)
            : genuine
                .replace(signedAssertion, () => evil)
                .replace(
                  '</saml:Issuer>',
                  () => `</saml:Issuer><samlp:Extensions>${signedAssertion}</samlp:Extensions>`,
                );
        break;
      }
      case 'comment-injection': {
        const visible = victim ?? defaultVisiblePart(account.nameId);
        if (!account.nameId.startsWith(visible) || visible.length >= account.nameId.length)
          throw new Error(`comment-injection: ${visible} is not a proper prefix of ${account.nameId}`);
        const commented = `${textEscape(visible)}<!---->${textEscape(account.nameId.slice(visible.length))}`;
        xml = (await signed()).replaceAll(`>${textEscape(account.nameId)}<`, () => `>${commented}<`);
        break;
      }
      default:
        xml = await signed();
    }
    lastResponse = Buffer.from(xml, 'utf8').toString('base64');
    return lastResponse;
  }
});

/** samlify's view of the service provider: where the response goes, and what gets signed. */
function spEntity(acsUrl, signWholeResponse = false) {
  return ServiceProvider({
    entityID: sp.entityId,
    assertionConsumerService: [{ Binding: POST, Location: acsUrl }],
    wantAssertionsSigned: true,
    wantMessageSigned: signWholeResponse,
  });
}

const ids = () => ({
  ID: `_${randomUUID()}`,
  AssertionID: `_${randomUUID()}`,
  SessionIndex: `_${randomUUID()}`,
});

function subject(who) {
  const attributes = [
    ['email', who.email ? [who.email] : []],
    ['name', who.name ? [who.name] : []],
    ['groups', who.groups ?? []],
  ].filter(([, list]) => list.length > 0);
  const statement = attributes.length
    ? `<saml:AttributeStatement>${attributes
        .map(
          ([name, list]) =>
            `<saml:Attribute Name="${name}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">${list
              .map((value) => `<saml:AttributeValue>${textEscape(value)}</saml:AttributeValue>`)
              .join('')}</saml:Attribute>`,
        )
        .join('')}</saml:AttributeStatement>`
    : '';
  return {
    NameID: who.nameId,
    NameIDFormat: who.nameIdFormat ?? EMAIL_FORMAT,
    Attributes: { xml: statement },
  };
}

function victimAccount(victim = 'admin@example.test') {
  return { ...account, nameId: victim, email: victim };
}

/** `admin@example.test.evil.test` → `admin@example.test`: the local part and two domain labels. */
function defaultVisiblePart(nameId) {
  const [local, domain = ''] = nameId.split('@');
  return `${local}@${domain.split('.').slice(0, 2).join('.')}`;
}

/** The (first) <saml:Assertion> element of a response, as text. */
function assertionOf(xml) {
  const start = xml.indexOf('<saml:Assertion');
  const end = xml.indexOf('</saml:Assertion>', start) + '</saml:Assertion>'.length;
  return xml.slice(start, end);
}

/**
 * Fills `{Name}` placeholders in one pass: text is XML-escaped, `{ xml }` values go in as they are,
 * and an attribute whose value is undefined is left out.
 */
function fill(template, values) {
  return template.replace(/ ([\w:]+)="\{(\w+)\}"|\{(\w+)\}/g, (_, attribute, inAttribute, inText) => {
    if (attribute)
      return values[inAttribute] === undefined ? '' : ` ${attribute}="${xmlEscape(values[inAttribute])}"`;
    const value = values[inText];
    if (value === undefined) throw new Error(`no value for {${inText}}`);
    return typeof value === 'object' ? value.xml : textEscape(value);
  });
}

/** As the signer's serializer (xmldom) escapes text, so that the signed NameID can be found. */
function textEscape(text) {
  return String(text).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

function xmlEscape(text) {
  return String(text)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&apos;');
}

/** The page a browser gets: a form that posts itself to the ACS URL, plain enough to parse. */
function postForm(action, samlResponse, relayState) {
  const fields = [
    ['SAMLResponse', samlResponse],
    ...(relayState === undefined ? [] : [['RelayState', relayState]]),
  ];
  return [
    '<!DOCTYPE html>',
    '<html><head><title>Signing in</title></head><body onload="document.forms[0].submit()">',
    `<form method="post" action="${xmlEscape(action)}">`,
    ...fields.map(([name, value]) => `<input type="hidden" name="${name}" value="${xmlEscape(value)}">`),
    '<noscript><button type="submit">Continue</button></noscript>',
    '</form>',
    '</body></html>',
  ].join('\n');
}

function html(res, page) {
  res.setHeader('content-type', 'text/html; charset=utf-8');
  res.setHeader('cache-control', 'no-store');
  res.end(page);
}

function refuse(res, reason) {
  res.statusCode = 400;
  res.end(reason);
}

function body(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.on('data', (chunk) => {
      text += chunk;
    });
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
// Standard input is a pipe from the test process: it closes when that process dies without stop().
process.stdin.on('close', stop);
process.stdin.resume();
