import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { newId } from '@bulwark/protocol';
import type { DataKeyring } from './data-keyring.js';
import type { MasterKeyProvider } from './key-provider.js';
import { sealedKeyId } from './keyring.js';
import type { ServerKeyRow, ServerKeysStore } from './server-keys.store.js';

/**
 * The server's Ed25519 signing keys, one per purpose (CRYPTO-1: audit checkpoints, and later command
 * envelopes and workload tokens, never share a key). Private keys are stored sealed by the instance's
 * data key and bound to their row (DATA-1); public keys are stored in clear so anyone can verify.
 */
export type ServerKeyPurpose =
  | 'audit-checkpoint'
  /** Proves the server to its agents at every connection and signs their commands (AGT-6, CMD-7). */
  | 'agent-channel';

export interface Signer {
  keyId: string;
  purpose: ServerKeyPurpose;
  publicKey: KeyObject;
  sign(message: string): string;
}

export class ServerKeyIntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ServerKeyIntegrityError';
  }
}

const sealContext = (row: Pick<ServerKeyRow, 'id' | 'purpose'>) => `server_keys/${row.id}/${row.purpose}`;

export function verifyEd25519(publicKey: KeyObject, message: string, signature: string): boolean {
  try {
    return verify(null, Buffer.from(message, 'utf8'), publicKey, Buffer.from(signature, 'base64url'));
  } catch {
    return false;
  }
}

export function publicKeyFromRow(row: Pick<ServerKeyRow, 'public_key'>): KeyObject {
  return createPublicKey({ key: Buffer.from(row.public_key, 'base64'), format: 'der', type: 'spki' });
}

/** Sealed directly by a master key, as before data keys existed: its key id is not a data key's. */
const sealedByMasterKey = (sealed: string) => !sealedKeyId(sealed).startsWith('dek_');

export function createServerKeysService(deps: {
  store: ServerKeysStore;
  dataKeys: DataKeyring;
  /** Opens private keys stored before data keys existed, to seal them again under one. */
  masterKeys: MasterKeyProvider;
  clock: () => number;
}) {
  const { store, dataKeys, masterKeys, clock } = deps;
  const signers = new Map<ServerKeyPurpose, Promise<Signer>>();

  async function openPrivateKey(row: ServerKeyRow): Promise<KeyObject> {
    let der: Buffer;
    if (sealedByMasterKey(row.private_key_sealed)) {
      der = masterKeys.unwrap(row.private_key_sealed, sealContext(row));
      const resealed = await dataKeys.seal('instance', der, sealContext(row));
      await store.resealPrivateKey(row.id, row.private_key_sealed, resealed);
    } else {
      const opened = await dataKeys.open('instance', row.private_key_sealed, sealContext(row));
      der = opened.plaintext;
      if (opened.stale) {
        const resealed = await dataKeys.seal('instance', der, sealContext(row));
        await store.resealPrivateKey(row.id, row.private_key_sealed, resealed);
      }
    }
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  }

  async function loadOrCreate(purpose: ServerKeyPurpose): Promise<Signer> {
    let row = await store.findByPurpose(purpose);
    if (!row) {
      const { publicKey, privateKey } = generateKeyPairSync('ed25519');
      const id = newId('key', clock());
      const candidate: ServerKeyRow = {
        id,
        purpose,
        algorithm: 'ed25519',
        public_key: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
        private_key_sealed: await dataKeys.seal(
          'instance',
          privateKey.export({ format: 'der', type: 'pkcs8' }),
          sealContext({ id, purpose }),
        ),
        created_at: clock(),
      };
      await store.insertIfAbsent(candidate);
      row = await store.findByPurpose(purpose);
      if (!row) throw new ServerKeyIntegrityError(`server key for ${purpose} vanished after creation`);
    }
    const privateKey = await openPrivateKey(row);
    const keyId = row.id;
    return {
      keyId,
      purpose,
      publicKey: publicKeyFromRow(row),
      sign: (message) => sign(null, Buffer.from(message, 'utf8'), privateKey).toString('base64url'),
    };
  }

  return {
    /** The signer for a purpose, created on first use; cached for the life of the process. */
    signer(purpose: ServerKeyPurpose): Promise<Signer> {
      let signer = signers.get(purpose);
      if (!signer) {
        signer = loadOrCreate(purpose);
        signers.set(purpose, signer);
        signer.catch(() => signers.delete(purpose));
      }
      return signer;
    },

    /** Public keys of one purpose by key id: a key made for another purpose never verifies this one's statements. */
    async publicKeys(purpose: ServerKeyPurpose): Promise<Map<string, KeyObject>> {
      const rows = (await store.list()).filter((row) => row.purpose === purpose);
      return new Map(rows.map((row) => [row.id, publicKeyFromRow(row)]));
    },

    async exists(purpose: ServerKeyPurpose): Promise<boolean> {
      return (await store.findByPurpose(purpose)) !== undefined;
    },

    /**
     * Proves each stored public key belongs to its sealed private key. Someone who can write the
     * database but does not hold the master key cannot swap in a public key of their own to make
     * forged checkpoints verify.
     */
    async assertIntegrity(): Promise<void> {
      for (const row of await store.list()) {
        let derived: string;
        try {
          derived = createPublicKey(await openPrivateKey(row))
            .export({ format: 'der', type: 'spki' })
            .toString('base64');
        } catch (error) {
          throw new ServerKeyIntegrityError(
            `server key ${row.id} (${row.purpose}) cannot be opened: ${(error as Error).message}`,
          );
        }
        if (derived !== row.public_key) {
          throw new ServerKeyIntegrityError(
            `server key ${row.id} (${row.purpose}): stored public key does not match its private key`,
          );
        }
      }
    },
  };
}

export type ServerKeysService = ReturnType<typeof createServerKeysService>;
