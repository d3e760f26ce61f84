/**
 * crypto: what Bulwark's encryption costs per operation (issue 7), each beside raw node:crypto
 * AES-256-GCM on the same payloads in the same run.
 *
 * - seal / open: a secret value sealed and opened through the real data keyring (the organization's
 *   data key, unwrapped once and then held; key id, context as authenticated data, base64url text
 *   form), on a real SQLite file;
 * - seal / unseal for an agent: a command's secrets sealed to an agent's X25519 key (an ephemeral
 *   key pair and an ECDH per sealing, HKDF, AES-256-GCM) and opened with the agent's private key;
 * - the baseline: AES-256-GCM with a fresh random nonce per message, over the same bytes, nothing
 *   else.
 *
 * Payload: a 64-byte secret value (a long password or API token). Goal: reported, not set.
 */
import { createCipheriv, createDecipheriv, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openSecrets, rawPublicKey, sealSecrets } from '@bulwark/protocol';
import { openSqlite } from '../packages/server/src/db/database.js';
import { migrateToLatest } from '../packages/server/src/db/migrate.js';
import { createDataKeyring, orgScope } from '../packages/server/src/secrets/data-keyring.js';
import { createDataKeysStore } from '../packages/server/src/secrets/data-keys.store.js';
import { createLocalKeyProvider } from '../packages/server/src/secrets/key-provider.js';
import { fmt, machine, median } from './http-support.js';

const OPERATIONS = Number(process.env.BENCH_OPERATIONS ?? 20_000);
const ROUNDS = 5;
const VALUE = randomBytes(48).toString('base64url'); // 64 characters
const CONTEXT = 'secrets/org_bench/sec_bench/v1';

const dir = mkdtempSync(path.join(tmpdir(), 'bulwark-bench-crypto-'));
const database = openSqlite({ file: path.join(dir, 'bulwark.db'), busyTimeoutMs: 5000 });
await migrateToLatest(database);
const masterKeys = { current: randomBytes(32), previous: [] };
const keyring = createDataKeyring({
  store: createDataKeysStore(database.db),
  provider: createLocalKeyProvider(masterKeys, () => masterKeys),
  clock: Date.now,
});
const scope = orgScope('org_bench');
const agent = generateKeyPairSync('x25519');
const recipient = rawPublicKey(agent.publicKey);
const binding = { commandId: 'cmd_01M81RY6C83Z2TQS77D61GDTTJ', agentId: 'agt_01M81RY40N1Y2JCEAVSPF3ZPQR' };
const rawKey = randomBytes(32);

/** Operations per second of `operation`, run OPERATIONS times. */
async function rate(operation: (i: number) => unknown): Promise<number> {
  const started = process.hrtime.bigint();
  for (let i = 0; i < OPERATIONS; i++) await operation(i);
  return OPERATIONS / (Number(process.hrtime.bigint() - started) / 1e9);
}

function rawSeal(): { nonce: Buffer; ciphertext: Buffer; tag: Buffer } {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', rawKey, nonce);
  const ciphertext = Buffer.concat([cipher.update(VALUE, 'utf8'), cipher.final()]);
  return { nonce, ciphertext, tag: cipher.getAuthTag() };
}
function rawOpen(sealed: ReturnType<typeof rawSeal>): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', rawKey, sealed.nonce);
  decipher.setAuthTag(sealed.tag);
  return Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]);
}

try {
  // Warm-up: the data key is created and unwrapped once, as in a running server.
  const sealedValue = await keyring.seal(scope, VALUE, CONTEXT);
  const rawSealed = rawSeal();
  const box = sealSecrets(recipient, { DB_PASSWORD: VALUE }, binding);
  const rounds: Record<string, number[]> = {};
  const measure = async (name: string, operation: (i: number) => unknown) => {
    rounds[name] ??= [];
    rounds[name].push(await rate(operation));
  };
  for (let round = 0; round < ROUNDS; round++) {
    await measure('raw AES-256-GCM seal', () => rawSeal());
    await measure('raw AES-256-GCM open', () => rawOpen(rawSealed));
    await measure('keyring seal (secret value)', () => keyring.seal(scope, VALUE, CONTEXT));
    await measure('keyring open (secret value)', () => keyring.open(scope, sealedValue, CONTEXT));
    await measure('seal to an agent (X25519)', () => sealSecrets(recipient, { DB_PASSWORD: VALUE }, binding));
    await measure('unseal on the agent (X25519)', () => openSecrets(agent.privateKey, box, binding));
  }
  const result = Object.fromEntries(Object.entries(rounds).map(([name, values]) => [name, median(values)]));
  process.stdout.write(`machine: ${machine()}; ${fmt(OPERATIONS)} operations x ${ROUNDS} rounds, median\n\n`);
  for (const [name, perSecond] of Object.entries(result))
    process.stdout.write(`${name.padEnd(32)} ${fmt(perSecond).padStart(10)} ops/s\n`);
  const ratio = (a: string, b: string) => (result[a]! / result[b]!).toFixed(2);
  process.stdout.write(
    `\nkeyring / raw: seal ${ratio('keyring seal (secret value)', 'raw AES-256-GCM seal')}, open ${ratio(
      'keyring open (secret value)',
      'raw AES-256-GCM open',
    )}; agent sealing / raw seal ${ratio('seal to an agent (X25519)', 'raw AES-256-GCM seal')}\n`,
  );
} finally {
  await database.close();
  rmSync(dir, { recursive: true, force: true });
}
