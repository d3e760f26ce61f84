import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../test-support/server.js';
import { tempDir } from '../test-support/temp.js';

/** NET-1: native TLS, tested with a certificate made for this test by the machine's openssl. */

let dir: { path: string; remove(): Promise<void> };
let cert: string;
let key: string;
let server: TestServer | undefined;

beforeAll(async () => {
  dir = await tempDir('tls');
  cert = path.join(dir.path, 'cert.pem');
  key = path.join(dir.path, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
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
});
afterAll(() => dir.remove());
afterEach(async () => {
  await server?.close();
  server = undefined;
});

function get(url: string, options: { minVersion?: 'TLSv1.2'; maxVersion?: 'TLSv1.2' } = {}) {
  return new Promise<{ status: number; protocol: string | null; hsts: string | undefined }>(
    (resolve, reject) => {
      const req = request(url, { ca: [readFileSync(cert)], agent: false, ...options }, (response) => {
        const protocol = (response.socket as TLSSocket).getProtocol();
        response.resume();
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            protocol,
            hsts: response.headers['strict-transport-security'] as string | undefined,
          }),
        );
      });
      req.on('error', reject);
      req.end();
    },
  );
}

describe('native TLS', () => {
  it('serves HTTPS with TLS 1.3 by default, sends HSTS, and refuses TLS 1.2 clients', async () => {
    server = await startTestServer({ BULWARK_TLS_CERT_FILE: cert, BULWARK_TLS_KEY_FILE: key });
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const response = await get(`${server.url}/healthz`);
    expect(response).toMatchObject({ status: 200, protocol: 'TLSv1.3' });
    expect(response.hsts).toBe('max-age=63072000; includeSubDomains');
    await expect(get(`${server.url}/healthz`, { maxVersion: 'TLSv1.2' })).rejects.toThrow(
      /version|alert|handshake/i,
    );
  });

  it('accepts TLS 1.2 when the operator lowers the floor to it', async () => {
    server = await startTestServer({
      BULWARK_TLS_CERT_FILE: cert,
      BULWARK_TLS_KEY_FILE: key,
      BULWARK_TLS_MIN_VERSION: 'TLSv1.2',
    });
    expect(await get(`${server.url}/healthz`, { maxVersion: 'TLSv1.2' })).toMatchObject({
      status: 200,
      protocol: 'TLSv1.2',
    });
  });

  it('binds beyond loopback only with TLS, and refuses a private key others can read', async () => {
    server = await startTestServer({
      BULWARK_HOST: '0.0.0.0',
      BULWARK_TLS_CERT_FILE: cert,
      BULWARK_TLS_KEY_FILE: key,
    });
    expect(server.url).toMatch(/^https:\/\/0\.0\.0\.0:\d+$/);
    await server.close();
    server = undefined;
    chmodSync(key, 0o644);
    try {
      await expect(
        startTestServer({ BULWARK_TLS_CERT_FILE: cert, BULWARK_TLS_KEY_FILE: key }),
      ).rejects.toThrow('TLS private key');
    } finally {
      chmodSync(key, 0o600);
    }
  });
});
