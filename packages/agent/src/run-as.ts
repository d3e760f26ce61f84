import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * Run-as (EXEC-2): an exec action may run as another user and group than the agent. The agent
 * starts the child with Node's spawn `uid`/`gid`: in the child, libuv calls setgroups(0, NULL), then
 * setgid, then setuid, then exec. Consequences the rest of the agent relies on:
 *
 * - Supplementary groups are CLEARED, not initialised from the group database (Node does not call
 *   initgroups): the child has exactly the one group, `group` or the user's primary group. Access
 *   that depends on a secondary membership of the user needs that group named as `runAs.group`.
 * - Only a root agent can do this cleanly. The kernel drops every capability (permitted, effective
 *   and ambient) when a process whose uids include 0 switches to uids that are all non-zero; a
 *   non-root agent given CAP_SETUID would keep its capabilities across the switch and hand them to
 *   the command, which could then become root. So runAs needs uid 0 *and* CAP_SETUID, CAP_SETGID
 *   (the switch) and CAP_KILL (signalling the command's group, now another user's, on timeout and
 *   cancel), and the agent refuses to start without them.
 * - The working directory is entered by root, before the switch: the agent checks that the user can
 *   reach it, or the command would start in a directory it cannot use.
 */

/** The uid and gid an action runs as, resolved when the config is loaded. */
export interface RunAsIdentity {
  uid: number;
  gid: number;
  /** For messages and logs: the name as configured or found, else `uid N`. */
  user: string;
  /** For messages and logs: the name as configured, else `gid N`. */
  group: string;
}

/** As declared in agent.yaml: a name, or a numeric id taken as is. */
export interface RunAsSpec {
  user: string | number;
  group?: string | number | undefined;
}

/** Node's spawn takes int32 ids; -1 (4294967295) means "no change" to the kernel and is never valid. */
export const MAX_ID = 2_147_483_647;

type Lookup = { found: true; fields: string[] } | { found: false } | { error: string };

/** How long a user-database lookup may take (NSS may ask a directory server). */
const LOOKUP_TIMEOUT_MS = 10_000;

/**
 * One entry of the passwd or group database. `getent` goes through NSS, so users from LDAP, sssd or
 * systemd-homed resolve as they do for login; where getent is not installed (minimal images), the
 * files /etc/passwd and /etc/group are read instead.
 */
function lookup(database: 'passwd' | 'group', key: string): Lookup {
  try {
    const out = execFileSync('getent', [database, key], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: LOOKUP_TIMEOUT_MS,
    });
    const line = out.split('\n')[0] ?? '';
    return line === '' ? { found: false } : { found: true, fields: line.split(':') };
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { status?: number | null; signal?: string | null };
    // getent: exit 2 means "no such key".
    if (failure.status === 2) return { found: false };
    if (failure.code === 'ENOENT') return lookupFile(database, key);
    if (failure.signal)
      return { error: `looking up ${key} in ${database} did not finish (${failure.signal})` };
    return { error: `looking up ${key} in ${database} failed (getent exit ${failure.status ?? '?'})` };
  }
}

function lookupFile(database: 'passwd' | 'group', key: string): Lookup {
  let text: string;
  try {
    text = readFileSync(`/etc/${database}`, 'utf8');
  } catch (error) {
    return { error: `cannot read /etc/${database}: ${(error as NodeJS.ErrnoException).code ?? 'error'}` };
  }
  const numeric = /^\d+$/.test(key);
  for (const line of text.split('\n')) {
    // `+`/`-` lines are NIS compat markers, not entries.
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    const fields = line.split(':');
    if (fields[0] === key || (numeric && fields[2] === key)) return { found: true, fields };
  }
  return { found: false };
}

function idField(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const id = Number(value);
  return id <= MAX_ID ? id : undefined;
}

export type RunAsResolution =
  | { ok: true; identity: RunAsIdentity }
  | { ok: false; where: 'user' | 'group'; message: string };

/** Resolves a runAs declaration against this host's user and group databases. */
export function resolveRunAs(spec: RunAsSpec): RunAsResolution {
  let entry = lookup('passwd', String(spec.user));
  if ('error' in entry) {
    // A numeric uid with a group needs nothing from the database: it only names the user in messages.
    if (typeof spec.user !== 'number' || spec.group === undefined) {
      return { ok: false, where: 'user', message: entry.error };
    }
    entry = { found: false };
  }
  let uid: number;
  let user: string;
  let primaryGid: number | undefined;
  if (typeof spec.user === 'number') {
    uid = spec.user;
    user = entry.found ? (entry.fields[0] ?? `uid ${uid}`) : `uid ${uid}`;
    // A numeric uid is taken as is; only its primary group comes from the database, when it has an entry.
    primaryGid = entry.found && idField(entry.fields[2]) === uid ? idField(entry.fields[3]) : undefined;
  } else {
    if (!entry.found) {
      return { ok: false, where: 'user', message: `user "${spec.user}" does not exist on this host` };
    }
    const found = idField(entry.fields[2]);
    if (found === undefined) {
      return {
        ok: false,
        where: 'user',
        message: `user "${spec.user}" has no usable uid in the user database`,
      };
    }
    uid = found;
    user = spec.user;
    primaryGid = idField(entry.fields[3]);
  }

  let gid: number;
  let group: string;
  if (spec.group === undefined) {
    if (primaryGid === undefined) {
      return {
        ok: false,
        where: 'group',
        message: `${user} has no primary group in the user database: declare runAs.group`,
      };
    }
    gid = primaryGid;
    group = `gid ${gid}`;
  } else if (typeof spec.group === 'number') {
    gid = spec.group;
    group = `gid ${gid}`;
  } else {
    const found = lookup('group', spec.group);
    if ('error' in found) return { ok: false, where: 'group', message: found.error };
    const id = found.found ? idField(found.fields[2]) : undefined;
    if (id === undefined) {
      return { ok: false, where: 'group', message: `group "${spec.group}" does not exist on this host` };
    }
    gid = id;
    group = spec.group;
  }
  return { ok: true, identity: { uid, gid, user, group } };
}

const CAPABILITIES = { CAP_KILL: 5, CAP_SETGID: 6, CAP_SETUID: 7 } as const;

/**
 * Why this process cannot run commands as other users, or undefined when it can. The capabilities
 * come from /proc/self/status (Linux); where it does not exist, root is assumed to hold them.
 */
export function runAsPrivilegeProblem(): string | undefined {
  const uid = process.getuid?.();
  const euid = process.geteuid?.();
  if (uid !== 0 || euid !== 0) {
    return (
      `the agent runs as uid ${euid ?? '?'}, not root: only a root agent can start a command as another ` +
      'user without passing its own privileges on to it'
    );
  }
  let text: string;
  try {
    text = readFileSync('/proc/self/status', 'utf8');
  } catch {
    return undefined;
  }
  const effective = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(text)?.[1];
  if (effective === undefined) return undefined;
  const bits = BigInt(`0x${effective}`);
  const missing = Object.entries(CAPABILITIES)
    .filter(([, bit]) => (bits & (1n << BigInt(bit))) === 0n)
    .map(([name]) => name);
  if (missing.length === 0) return undefined;
  return `the agent runs as root without ${missing.join(', ')} (a capability bounding set or container drops them)`;
}

/**
 * Why `identity` cannot enter `directory` (absolute and real), or undefined when it can: it needs
 * search permission on the directory and every one above it, judged from the mode bits with the
 * child's only group (supplementary groups are cleared). POSIX ACLs are not consulted, so an ACL
 * that grants access is not seen: grant it in the mode bits, or use a directory the user or its
 * group owns.
 */
export async function inaccessibleDirectory(
  directory: string,
  identity: Pick<RunAsIdentity, 'uid' | 'gid'>,
): Promise<string | undefined> {
  if (identity.uid === 0) return undefined;
  let current = directory;
  for (;;) {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(current);
    } catch (error) {
      return `${current}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`;
    }
    // The kernel's order: the owner's bits if the user owns it, else the group's, else the others'.
    const shift = info.uid === identity.uid ? 6 : info.gid === identity.gid ? 3 : 0;
    if (((info.mode >> shift) & 0o1) === 0) return `no search permission on ${current}`;
    const parent = path.dirname(current);
    if (parent === current) return undefined;
    current = parent;
  }
}
