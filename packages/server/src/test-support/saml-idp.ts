import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tempDir } from './temp.js';

const FIXTURE = fileURLToPath(new URL('./saml-idp.fixture.mjs', import.meta.url));

/**
 * How the IdP makes its responses from now on (saml-idp.fixture.mjs, `respond`, says exactly):
 * 'none' signs the Assertion (and the Response while `signResponse` is on); the others are a broken
 * or hostile IdP's: nothing signed, expired, for another audience or recipient, signed with a key
 * not in the metadata, XML signature wrapping (XSW3; XSW7 with the signed Assertion in
 * <samlp:Extensions>), or a comment inserted into the signed NameID.
 */
export type SamlTamperMode =
  | 'none'
  | 'unsigned'
  | 'expired'
  | 'wrong-audience'
  | 'wrong-recipient'
  | 'other-key'
  | 'wrapping'
  | 'wrapping-extensions'
  | 'comment-injection';

export interface SamlAccount {
  nameId: string;
  email?: string;
  name?: string;
  groups?: string[];
  /** Default urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress. */
  nameIdFormat?: string;
}

export interface SamlServiceProvider {
  entityId: string;
  acsUrl: string;
}

/** The AuthnRequest the IdP last received, as it read it. */
export interface SamlAuthnRequest {
  binding: 'redirect' | 'post';
  id: string;
  issuer: string;
  destination: string | null;
  acsUrl: string | null;
  protocolBinding: string | null;
  forceAuthn: boolean;
  isPassive: boolean;
  relayState: string | null;
  xml: string;
}

export interface SamlIdp {
  /** The IdP's entity ID, which is also where its metadata is served. */
  entityId: string;
  metadataUrl: string;
  /** The SSO endpoint, for both the HTTP-Redirect (GET) and HTTP-POST bindings. */
  ssoUrl: string;
  /** The signing certificate published in the metadata, PEM. */
  certificatePem: string;
  metadataXml(): Promise<string>;
  /** Who signs in at the IdP's next SSO request. */
  nextAccount(account: SamlAccount): Promise<void>;
  /**
   * How the IdP answers from now on. `victim`: for 'wrapping' and 'wrapping-extensions', the NameID
   * and email of the unsigned Assertion (default admin@example.test); for 'comment-injection', the
   * part of the NameID before the comment, a proper prefix of it (default: the local part and the
   * first two domain labels, `admin@example.test.evil.test` → `admin@example.test`).
   */
  tamper(mode: SamlTamperMode, options?: { victim?: string }): Promise<void>;
  /** The service provider the IdP serves; it refuses AuthnRequests from any other or for another ACS URL. */
  serviceProvider(sp: SamlServiceProvider): Promise<void>;
  /** Whether the Response is signed besides the Assertion (on at start unless told otherwise). */
  signResponse(on: boolean): Promise<void>;
  /** The HTML form of an IdP-initiated response (no InResponseTo) for the next account, made as `tamper` says. */
  unsolicited(acsUrl: string, relayState?: string): Promise<string>;
  /** The last SAMLResponse the IdP sent, base64, as it was posted: for a replay. */
  lastResponse(): Promise<string>;
  /** The last AuthnRequest the IdP received, or null before the first. */
  lastRequest(): Promise<SamlAuthnRequest | null>;
  stop(): Promise<void>;
}

const run = promisify(execFile);

/** A fresh RSA key and self-signed certificate, PEM, made by openssl (node:crypto makes no X.509). */
async function keyPair(dir: string, name: string, subject: string) {
  const key = path.join(dir, `${name}.key.pem`);
  const cert = path.join(dir, `${name}.cert.pem`);
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-sha256',
    '-days',
    '2',
    '-subj',
    `/CN=${subject}`,
    '-keyout',
    key,
    '-out',
    cert,
  ]);
  return { key: await readFile(key, 'utf8'), cert: await readFile(cert, 'utf8') };
}

/** Starts the fixture and resolves once it listens. */
async function launch(configFile: string) {
  // Its standard input is a pipe so that it stops by itself should this process die without stop().
  const child = spawn(process.execPath, [FIXTURE, '0', configFile], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = once(child, 'exit');
  const base = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening (\S+)/.exec(output);
      if (match) resolve(match[1]!);
    });
    exited.then(([code]) => reject(new Error(`the SAML IdP exited with ${code}:\n${output}`)));
  });
  return { child, exited, base };
}

/**
 * A real SAML identity provider process (samlify, test-support/saml-idp.fixture.mjs) on a free
 * loopback port, serving the one service provider `sp`. It signs in the next account without a page
 * and answers with a form that posts the SAMLResponse to the ACS URL: see `postedForm`.
 */
export async function startSamlIdp(
  sp: SamlServiceProvider,
  options: { signResponse?: boolean } = {},
): Promise<SamlIdp> {
  const dir = await tempDir('saml-idp');
  let signing: { key: string; cert: string };
  let launched: Awaited<ReturnType<typeof launch>>;
  try {
    let other: { key: string; cert: string };
    [signing, other] = await Promise.all([
      keyPair(dir.path, 'signing', 'Bulwark test SAML IdP'),
      keyPair(dir.path, 'other', 'Bulwark test SAML IdP'),
    ]);
    const configFile = path.join(dir.path, 'config.json');
    const signResponse = options.signResponse ?? true;
    await writeFile(configFile, JSON.stringify({ signing, other, sp, signResponse }));
    launched = await launch(configFile);
  } finally {
    // The IdP has read its keys by now (or failed): nothing is left on disk.
    await dir.remove();
  }
  const { child, exited, base } = launched;

  async function call(method: 'GET' | 'POST', route: string, body?: unknown): Promise<string> {
    const response = await fetch(`${base}${route}`, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${route} answered ${response.status}: ${text}`);
    return text;
  }

  return {
    entityId: `${base}/metadata`,
    metadataUrl: `${base}/metadata`,
    ssoUrl: `${base}/sso`,
    certificatePem: signing.cert,
    metadataXml: () => call('GET', '/metadata'),
    nextAccount: async (account) => {
      await call('POST', '/control/account', account);
    },
    tamper: async (mode, tamperOptions = {}) => {
      await call('POST', '/control/tamper', { mode, ...tamperOptions });
    },
    serviceProvider: async (next) => {
      await call('POST', '/control/sp', next);
    },
    signResponse: async (on) => {
      await call('POST', '/control/signing', { response: on });
    },
    unsolicited: (acsUrl, relayState) => call('POST', '/control/unsolicited', { acsUrl, relayState }),
    lastResponse: () => call('GET', '/control/last-response'),
    lastRequest: async () =>
      JSON.parse(await call('GET', '/control/last-request')) as SamlAuthnRequest | null,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'" };

/** The form in the IdP's page (or any page with one form): where it posts, and its named inputs. */
export function postedForm(html: string): { action: string; fields: Record<string, string> } {
  const decoded = (text: string) =>
    text.replace(/&(amp|lt|gt|quot|apos|#39);/g, (_, name: string) => ENTITIES[name]!);
  const form = /<form\b[^>]*\baction="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) throw new Error(`no form in:\n${html}`);
  const fields: Record<string, string> = {};
  for (const input of form[2]!.matchAll(/<input\b[^>]*>/gi)) {
    const name = /\bname="([^"]*)"/.exec(input[0]);
    const value = /\bvalue="([^"]*)"/.exec(input[0]);
    if (name) fields[decoded(name[1]!)] = decoded(value?.[1] ?? '');
  }
  return { action: decoded(form[1]!), fields };
}
