import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { deadPort } from './ports.js';
import { tempDir } from './temp.js';

/**
 * A real OpenLDAP server of a test's own: Debian's `slapd` with a `slapd.conf` in a temporary
 * directory, a fresh CA and server certificate per run, and a small seeded directory. The machine's
 * own slapd service (if the package started one) is never used. Needs the `slapd` and `ldap-utils`
 * packages and OpenSSL 3 (`openssl req -CA`).
 */

const run = promisify(execFile);

const SLAPD = '/usr/sbin/slapd';
const SLAPADD = '/usr/sbin/slapadd';
// Debian builds the backends and overlays as modules; slapd finds none of them without moduleload.
const MODULES = '/usr/lib/ldap';
const SCHEMAS = '/etc/ldap/schema';

export const LDAP_BASE_DN = 'dc=example,dc=test';

export interface LdapUser {
  uid: string;
  dn: string;
  cn: string;
  mail: string;
  password: string;
}

export const LDAP_USERS = {
  alice: {
    uid: 'alice',
    dn: `uid=alice,ou=people,${LDAP_BASE_DN}`,
    cn: 'Alice Example',
    mail: 'alice@example.test',
    password: 'alice-password',
  },
  bob: {
    uid: 'bob',
    dn: `uid=bob,ou=people,${LDAP_BASE_DN}`,
    cn: 'Bob Example',
    mail: 'bob@example.test',
    password: 'bob-password',
  },
} as const satisfies Record<string, LdapUser>;

/** `groupOfNames` entries; members are listed by DN in `member`, and each member shows `memberOf`. */
export const LDAP_GROUPS = {
  operators: { dn: `cn=operators,ou=groups,${LDAP_BASE_DN}`, members: [LDAP_USERS.alice.dn] },
  admins: { dn: `cn=admins,ou=groups,${LDAP_BASE_DN}`, members: [LDAP_USERS.bob.dn] },
} as const;

const SERVICE_ACCOUNT = {
  dn: `cn=bulwark,ou=services,${LDAP_BASE_DN}`,
  password: 'bulwark-service-password',
};
const ADMIN = { dn: `cn=admin,${LDAP_BASE_DN}`, password: 'slapd-admin-password' };

export interface SlapdOptions {
  /** More LDIF entries (no changetype) loaded with the seed before the server starts. */
  extraLdif?: string;
  /** How long the server may take to answer; generous, because CI machines are loaded. */
  startTimeoutMs?: number;
}

export interface Slapd {
  /** `ldaps://127.0.0.1:PORT`: TLS from the first byte. */
  url: string;
  /** `ldap://127.0.0.1:PORT`: plain LDAP, for StartTLS. */
  startTlsUrl: string;
  /** The CA that signed the server's certificate (SAN IP:127.0.0.1 and DNS:localhost). */
  caPem: string;
  /** The same CA as a file, for the ldap-utils CLIs (`LDAPTLS_CACERT`). */
  caFile: string;
  baseDn: string;
  /** May read every entry but no password; what Bulwark searches with. */
  serviceAccount: { dn: string; password: string };
  /** The rootdn: bypasses every ACL. For arranging a test, never for what is being tested. */
  admin: { dn: string; password: string };
  /** Applies LDIF change records (`changetype: add|modify|delete|modrdn`) as the rootdn. */
  modify(ldif: string): Promise<void>;
  setPassword(dn: string, password: string): Promise<void>;
  /** Adds an inetOrgPerson under ou=people and resolves with its DN. */
  addUser(user: { uid: string; cn: string; mail?: string; password: string }): Promise<string>;
  /** Stops the server (SIGTERM, then waits for it to exit) and deletes its files. */
  stop(): Promise<void>;
}

/**
 * Whether this machine can run the LDAP suites. On a laptop without Debian's slapd they skip; in CI
 * (BULWARK_TEST_REQUIRE_SERVICES=1, and .ci/run installs slapd) a missing slapd fails the run.
 */
export function slapdForSuite(suite: string): { available: boolean } {
  const unavailable = slapdUnavailable();
  if (unavailable && process.env.BULWARK_TEST_REQUIRE_SERVICES === '1')
    throw new Error(`CI needs slapd for ${suite}: ${unavailable}`);
  return { available: unavailable === null };
}

/** Why this machine cannot run a private slapd, or null when it can. */
function slapdUnavailable(): string | null {
  for (const file of [SLAPD, SLAPADD, path.join(MODULES, 'back_mdb.so'), path.join(SCHEMAS, 'core.schema')]) {
    if (!existsSync(file)) return `${file} is missing (install the slapd package)`;
  }
  return null;
}

/** `{SSHA}`: salted SHA-1, which slapd verifies natively. Weak, but these are test passwords. */
function sshaHash(password: string): string {
  const salt = randomBytes(8);
  const digest = createHash('sha1').update(password).update(salt).digest();
  return `{SSHA}${Buffer.concat([digest, salt]).toString('base64')}`;
}

/** An LDIF line; values LDIF cannot carry as text (RFC 2849 SAFE-STRING) go base64-encoded. */
function line(attribute: string, value: string): string {
  return /^[\x21-\x39\x3b\x3d-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/.test(value)
    ? `${attribute}: ${value}`
    : `${attribute}:: ${Buffer.from(value).toString('base64')}`;
}

/** Escapes an RDN value (RFC 4514), so a test may use any uid. */
function rdnValue(value: string): string {
  return value
    .replace(/[\\,+"<>;=\0]/g, (char) => (char === '\0' ? '\\00' : `\\${char}`))
    .replace(/^[ #]/, '\\$&')
    .replace(/ $/, '\\ ');
}

function entry(dn: string, attributes: [string, string][]): string {
  return [line('dn', dn), ...attributes.map(([name, value]) => line(name, value))].join('\n') + '\n\n';
}

function userEntry(dn: string, user: { uid: string; cn: string; mail?: string; password: string }): string {
  return entry(dn, [
    ['objectClass', 'inetOrgPerson'],
    ['uid', user.uid],
    ['cn', user.cn],
    ['sn', user.cn.split(' ').at(-1) || user.uid],
    ...(user.mail ? [['mail', user.mail] as [string, string]] : []),
    ['userPassword', sshaHash(user.password)],
  ]);
}

function seedLdif(): string {
  const unit = (ou: string) =>
    entry(`ou=${ou},${LDAP_BASE_DN}`, [
      ['objectClass', 'organizationalUnit'],
      ['ou', ou],
    ]);
  return [
    entry(LDAP_BASE_DN, [
      ['objectClass', 'dcObject'],
      ['objectClass', 'organization'],
      ['dc', 'example'],
      ['o', 'Example'],
    ]),
    unit('people'),
    unit('groups'),
    unit('services'),
    entry(SERVICE_ACCOUNT.dn, [
      ['objectClass', 'applicationProcess'],
      ['objectClass', 'simpleSecurityObject'],
      ['cn', 'bulwark'],
      ['userPassword', sshaHash(SERVICE_ACCOUNT.password)],
    ]),
    ...Object.values(LDAP_USERS).map((user) => userEntry(user.dn, user)),
    ...Object.values(LDAP_GROUPS).map((group) =>
      entry(group.dn, [
        ['objectClass', 'groupOfNames'],
        ['cn', group.dn.slice(3, group.dn.indexOf(','))],
        ...group.members.map((member) => ['member', member] as [string, string]),
      ]),
    ),
  ].join('');
}

function slapdConf(dir: string): string {
  return `${['core', 'cosine', 'inetorgperson', 'nis', 'dyngroup']
    .map((schema) => `include ${path.join(SCHEMAS, `${schema}.schema`)}`)
    .join('\n')}
modulepath ${MODULES}
moduleload back_mdb
moduleload dynlist
pidfile "${path.join(dir, 'slapd.pid')}"

TLSCACertificateFile "${path.join(dir, 'ca.pem')}"
TLSCertificateFile "${path.join(dir, 'server.pem')}"
TLSCertificateKeyFile "${path.join(dir, 'server.key')}"

# An anonymous bind request (empty DN) is refused outright. A bind with a DN and an empty password
# is an "unauthenticated bind" (RFC 4513 5.1.2): servers that allow it answer success and treat the
# connection as anonymous, so a client that took success for "password correct" would let anyone in
# as anyone. OpenLDAP refuses it unless "allow bind_anon_dn" is set, which it is not here. Bulwark
# also refuses empty passwords itself; this keeps the server side honest for tests of that.
disallow bind_anon

database mdb
maxsize 16777216
suffix "${LDAP_BASE_DN}"
rootdn "${ADMIN.dn}"
rootpw ${sshaHash(ADMIN.password)}
directory "${path.join(dir, 'data')}"
index objectClass,uid,mail,cn,member eq

# Nobody reads a password hash; anonymous may only use one to bind. Entries: people read their
# own, the service account reads all; anonymous (never bound) searches see nothing.
access to attrs=userPassword
  by anonymous auth
  by * none
access to dn.subtree="${LDAP_BASE_DN}"
  by self read
  by dn.exact="${SERVICE_ACCOUNT.dn}" read
  by * none

# memberOf on people, computed from groupOfNames member at read time. Unlike the memberof overlay
# (deprecated in 2.5) this also holds for entries loaded with slapadd, which bypasses overlays.
overlay dynlist
dynlist-attrset groupOfNames labeledURI member+memberOf@groupOfNames
`;
}

/**
 * The server certificate names 127.0.0.1 and localhost. libldap (the ldap-utils CLIs) checks a
 * certificate for "localhost" against the machine's hostname instead, so that name is in too.
 */
const opensslConf = (machine: string) => `[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost${/^[A-Za-z0-9.-]+$/.test(machine) ? `, DNS:${machine}` : ''}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/** A CA and a server certificate it signs, new at every start. Our own config, not the system's. */
async function makeCertificates(dir: string): Promise<void> {
  const conf = path.join(dir, 'openssl.cnf');
  await writeFile(conf, opensslConf(hostname()));
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const common = ['-config', conf, '-x509', '-days', '2', ...key];
  await run('openssl', [
    'req',
    ...common,
    ...['-extensions', 'ca', '-subj', '/CN=Bulwark test LDAP CA'],
    ...['-keyout', path.join(dir, 'ca.key'), '-out', path.join(dir, 'ca.pem')],
  ]);
  await run('openssl', [
    'req',
    ...common,
    ...['-extensions', 'server', '-subj', '/CN=localhost'],
    ...['-CA', path.join(dir, 'ca.pem'), '-CAkey', path.join(dir, 'ca.key')],
    ...['-keyout', path.join(dir, 'server.key'), '-out', path.join(dir, 'server.pem')],
  ]);
}

/** Two distinct loopback ports nothing listens on (slapd cannot listen on port 0 and report it). */
async function twoPorts(): Promise<[number, number]> {
  const first = await deadPort();
  for (;;) {
    const second = await deadPort();
    if (second !== first) return [first, second];
  }
}

/** Starts slapd and resolves once the service account can bind over ldaps with the CA verified. */
export async function startSlapd(options: SlapdOptions = {}): Promise<Slapd> {
  const unavailable = slapdUnavailable();
  if (unavailable) throw new Error(`cannot run a private slapd: ${unavailable}`);
  const dir = await tempDir('slapd');
  const conf = path.join(dir.path, 'slapd.conf');
  const caFile = path.join(dir.path, 'ca.pem');
  const adminPasswordFile = path.join(dir.path, 'admin.password');
  const servicePasswordFile = path.join(dir.path, 'service.password');
  // The ldap-utils CLIs verify the server against our CA only; environment beats ldap.conf.
  const clientEnv = { ...process.env, LDAPTLS_CACERT: caFile, LDAPTLS_REQCERT: 'demand' };

  let child: ChildProcess | undefined;
  let exited: Promise<unknown> = Promise.resolve();
  // A worker that dies mid-test must not leave a server running and its files behind.
  const onExit = () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir.path, { recursive: true, force: true });
  };
  process.on('exit', onExit);

  const stop = async () => {
    try {
      if (child && child.exitCode === null && child.signalCode === null) {
        // SIGTERM is slapd's clean shutdown; mdb is closed properly. SIGKILL only if it hangs.
        const timer = setTimeout(() => child?.kill('SIGKILL'), 20_000);
        child.kill('SIGTERM');
        await exited;
        clearTimeout(timer);
      }
    } finally {
      process.off('exit', onExit);
      await dir.remove();
    }
  };

  let ldapsPort = 0;
  let ldapPort = 0;

  /** One slapd launch: 'ready', 'port-taken', or why it failed. */
  async function launch(deadline: number): Promise<'ready' | 'port-taken' | string> {
    // Runs as whoever runs the tests, root included: no -u/-g, so it reads the key file it was given.
    // "-d none" keeps slapd in the foreground (our child, killed by stop) and logs only its errors
    // to stderr; "-d 0" would silence those too, bind failures included.
    const started = spawn(
      SLAPD,
      ['-f', conf, '-h', `ldap://127.0.0.1:${ldapPort}/ ldaps://127.0.0.1:${ldapsPort}/`, '-d', 'none'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child = started;
    let stderr = '';
    started.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    let gone: [number | null, NodeJS.Signals | null] | undefined;
    exited = once(started, 'exit').then(
      (result) => {
        gone = result as [number | null, NodeJS.Signals | null];
      },
      (error: Error) => {
        stderr += error.message;
        gone = [null, null];
      },
    );

    // Polls with a real bind over TLS: a TCP connect alone succeeds before the database is open,
    // and a slapd of another test that took our port in a race fails on our fresh CA.
    const url = `ldaps://127.0.0.1:${ldapsPort}`;
    const whoami = [
      '-x',
      '-H',
      url,
      '-D',
      SERVICE_ACCOUNT.dn,
      '-y',
      servicePasswordFile,
      '-o',
      'nettimeout=10',
    ];
    let lastAttempt = '';
    for (;;) {
      try {
        await run('ldapwhoami', whoami, { env: clientEnv });
        return 'ready';
      } catch (error) {
        lastAttempt = (error as { stderr?: string }).stderr ?? String(error);
      }
      if (gone) {
        if (/errno=98|Address already in use/.test(stderr)) return 'port-taken';
        return `slapd exited with ${gone[0] ?? gone[1]}:\n${stderr}`;
      }
      if (Date.now() > deadline)
        return `slapd did not answer in time; ldapwhoami said:\n${lastAttempt}\n${stderr}`;
      await Promise.race([new Promise((resolve) => setTimeout(resolve, 50)), exited]);
    }
  }

  let caPem = '';
  try {
    await mkdir(path.join(dir.path, 'data'));
    await makeCertificates(dir.path);
    caPem = await readFile(caFile, 'utf8');
    await writeFile(conf, slapdConf(dir.path));
    // -y reads the whole file: no trailing newline.
    await writeFile(adminPasswordFile, ADMIN.password, { mode: 0o600 });
    await writeFile(servicePasswordFile, SERVICE_ACCOUNT.password, { mode: 0o600 });
    await writeFile(path.join(dir.path, 'seed.ldif'), seedLdif() + (options.extraLdif ?? ''));
    // slapadd writes the database directly, before slapd runs: faster than ldapadd after it.
    await run(SLAPADD, ['-q', '-f', conf, '-l', path.join(dir.path, 'seed.ldif')]);

    const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
    for (let attempt = 1; ; attempt++) {
      [ldapPort, ldapsPort] = await twoPorts();
      const outcome = await launch(deadline);
      if (outcome === 'ready') break;
      // Something else took a chosen port between our probe and slapd's bind: choose again.
      if (outcome === 'port-taken' && attempt < 5) continue;
      throw new Error(outcome === 'port-taken' ? 'slapd found its ports taken five times' : outcome);
    }
  } catch (error) {
    await stop();
    throw new Error(`the private slapd did not start: ${(error as Error).message}`);
  }

  const url = `ldaps://127.0.0.1:${ldapsPort}`;
  const modify = async (ldif: string) => {
    const pending = run('ldapmodify', ['-x', '-H', url, '-D', ADMIN.dn, '-y', adminPasswordFile], {
      env: clientEnv,
    });
    pending.child.stdin?.end(ldif);
    await pending;
  };

  return {
    url,
    startTlsUrl: `ldap://127.0.0.1:${ldapPort}`,
    caPem,
    caFile,
    baseDn: LDAP_BASE_DN,
    serviceAccount: { ...SERVICE_ACCOUNT },
    admin: { ...ADMIN },
    modify,
    setPassword: (dn, password) =>
      modify(
        `${line('dn', dn)}\nchangetype: modify\nreplace: userPassword\n${line('userPassword', sshaHash(password))}\n-\n`,
      ),
    async addUser(user) {
      const dn = `uid=${rdnValue(user.uid)},ou=people,${LDAP_BASE_DN}`;
      await modify(userEntry(dn, user).replace('\n', '\nchangetype: add\n'));
      return dn;
    },
    stop,
  };
}
