import { execFile, execFileSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../test-support/server.js';
import { tempDir } from '../test-support/temp.js';

/**
 * Attack (NET-1): an operator lowers the floor to TLS 1.2 for an old client, and a man in the middle
 * (or a client it controls) steers the handshake to the weakest suite the server still accepts:
 * static-RSA key exchange, so that whoever later gets the certificate's key decrypts every recorded
 * session; a CBC suite, open to padding-oracle timing attacks; a CCM8 suite, whose 64-bit tags are
 * forgeable at scale; or a finite-field group instead of an elliptic curve. The server must accept
 * only ECDHE with an AEAD cipher, whatever the client offers. Each handshake is made by the machine's
 * real `openssl s_client`, which offers exactly the suite it is told to.
 */

let dir: { path: string; remove(): Promise<void> };
const certs: Record<'rsa' | 'ecdsa', { cert: string; key: string }> = {
  rsa: { cert: '', key: '' },
  ecdsa: { cert: '', key: '' },
};
let server: TestServer | undefined;

function makeCertificate(kind: 'rsa' | 'ecdsa') {
  const cert = path.join(dir.path, `${kind}-cert.pem`);
  const key = path.join(dir.path, `${kind}-key.pem`);
  const keyOptions =
    kind === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      ...keyOptions,
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { stdio: 'ignore' },
  );
  chmodSync(key, 0o600);
  return { cert, key };
}

beforeAll(async () => {
  dir = await tempDir('tls-ciphers');
  certs.rsa = makeCertificate('rsa');
  certs.ecdsa = makeCertificate('ecdsa');
});
afterAll(() => dir.remove());
afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** A TLS 1.2 floor, as an operator with old clients would set it; the certificate of the given kind. */
async function serverWith(kind: 'rsa' | 'ecdsa'): Promise<string> {
  server = await startTestServer({
    BULWARK_TLS_CERT_FILE: certs[kind].cert,
    BULWARK_TLS_KEY_FILE: certs[kind].key,
    BULWARK_TLS_MIN_VERSION: 'TLSv1.2',
  });
  return new URL(server.url).port;
}

interface Handshake {
  ok: boolean;
  protocol: string | undefined;
  cipher: string | undefined;
  output: string;
}

/**
 * One handshake by `openssl s_client`, which closes at once (its input is empty). Asynchronous: the
 * server answers from this very process.
 */
function handshake(port: string, args: string[]): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'openssl',
      ['s_client', '-brief', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', ...args],
      { timeout: 30_000 },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') {
          reject(error);
          return;
        }
        const output = `${stdout}\n${stderr}`;
        resolve({
          ok: !error && output.includes('CONNECTION ESTABLISHED'),
          protocol: /Protocol version: (\S+)/.exec(output)?.[1],
          cipher: /Ciphersuite: (\S+)/.exec(output)?.[1],
          output,
        });
      },
    );
    child.stdin?.end();
  });
}

/** Whether this openssl build knows a suite at all (CCM8 may be compiled out). */
function clientKnows(cipher: string): boolean {
  try {
    execFileSync('openssl', ['ciphers', cipher], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('TLS 1.2 suites (NET-1)', () => {
  it('negotiates ECDHE with AES-GCM when a TLS 1.2 client offers everything it has', async () => {
    const port = await serverWith('rsa');
    const offered = await handshake(port, ['-tls1_2', '-cipher', 'ALL:@SECLEVEL=0']);
    expect(offered.ok, offered.output).toBe(true);
    expect(offered.protocol).toBe('TLSv1.2');
    expect(offered.cipher).toMatch(/^ECDHE-RSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
    const chacha = await handshake(port, ['-tls1_2', '-cipher', 'ECDHE-RSA-CHACHA20-POLY1305']);
    expect(chacha.cipher, chacha.output).toBe('ECDHE-RSA-CHACHA20-POLY1305');
  });

  it('refuses static-RSA key exchange, CBC and finite-field DHE to a client that offers only that', async () => {
    const port = await serverWith('rsa');
    // Each of these is in Node's default list and would be accepted with an RSA certificate.
    const accepted: string[] = [];
    for (const cipher of [
      'AES128-GCM-SHA256',
      'AES256-GCM-SHA384',
      'ECDHE-RSA-AES128-SHA256',
      'ECDHE-RSA-AES256-SHA384',
      'ECDHE-RSA-AES128-SHA',
      'DHE-RSA-AES128-GCM-SHA256',
    ]) {
      if ((await handshake(port, ['-tls1_2', '-cipher', cipher])).ok) accepted.push(cipher);
    }
    expect(accepted).toEqual([]);
  });

  it('refuses CCM8 and CBC with an ECDSA certificate, and accepts ECDHE-ECDSA with an AEAD', async () => {
    const port = await serverWith('ecdsa');
    const refusedSuites = ['ECDHE-ECDSA-AES128-SHA256', 'ECDHE-ECDSA-AES256-SHA'];
    if (clientKnows('ECDHE-ECDSA-AES128-CCM8')) refusedSuites.push('ECDHE-ECDSA-AES128-CCM8');
    const accepted: string[] = [];
    for (const cipher of refusedSuites) {
      if ((await handshake(port, ['-tls1_2', '-cipher', cipher])).ok) accepted.push(cipher);
    }
    expect(accepted).toEqual([]);
    for (const cipher of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-CHACHA20-POLY1305']) {
      const accepted = await handshake(port, ['-tls1_2', '-cipher', cipher]);
      expect(accepted.ok, accepted.output).toBe(true);
      expect(accepted.cipher).toBe(cipher);
    }
  });
});

describe('TLS 1.3 (NET-1)', () => {
  it('keeps the TLS 1.3 suites, over an elliptic-curve group only', async () => {
    const port = await serverWith('ecdsa');
    const modern = await handshake(port, ['-tls1_3']);
    expect(modern.ok, modern.output).toBe(true);
    expect(modern.protocol).toBe('TLSv1.3');
    for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256']) {
      const chosen = await handshake(port, ['-tls1_3', '-ciphersuites', suite]);
      expect(chosen.cipher, chosen.output).toBe(suite);
    }
    // A client offering only a finite-field group gets no handshake rather than a weaker exchange.
    const finiteField = await handshake(port, ['-tls1_3', '-groups', 'ffdhe2048']);
    expect(finiteField.ok, finiteField.output).toBe(false);
    const curve = await handshake(port, ['-tls1_3', '-groups', 'P-256']);
    expect(curve.ok, curve.output).toBe(true);
  });
});
