import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface TestCa {
  /** The CA's certificate (PEM file), what a client is told to trust. */
  caFile: string;
  caPem: string;
  /** A server certificate and key signed by this CA for localhost and 127.0.0.1. */
  issue(label: string): { certFile: string; keyFile: string };
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: 'pipe' });

/**
 * A certificate authority of its own, made with the machine's `openssl` (P-256, valid two days), for
 * tests of TLS to backing services: a server with a certificate from one test CA, and a client that
 * trusts it or trusts another (a man in the middle's).
 */
export function makeTestCa(dir: string, name: string): TestCa {
  const caKey = path.join(dir, `${name}-ca.key`);
  const caFile = path.join(dir, `${name}-ca.pem`);
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      caKey,
      '-out',
      caFile,
      '-days',
      '2',
      '-subj',
      `/CN=Bulwark test CA ${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  return {
    caFile,
    caPem: readFileSync(caFile, 'utf8'),
    issue(label) {
      const keyFile = path.join(dir, `${name}-${label}.key`);
      const csr = path.join(dir, `${name}-${label}.csr`);
      const certFile = path.join(dir, `${name}-${label}.pem`);
      const ext = path.join(dir, `${name}-${label}.ext`);
      writeFileSync(
        ext,
        'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n',
      );
      openssl(
        [
          'req',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-keyout',
          keyFile,
          '-out',
          csr,
          '-subj',
          '/CN=localhost',
        ],
        dir,
      );
      openssl(
        [
          'x509',
          '-req',
          '-in',
          csr,
          '-CA',
          caFile,
          '-CAkey',
          caKey,
          '-CAcreateserial',
          '-out',
          certFile,
          '-days',
          '2',
          '-extfile',
          ext,
        ],
        dir,
      );
      return { certFile, keyFile };
    },
  };
}
