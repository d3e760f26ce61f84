import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.js';
import type { DataKeyring } from '../secrets/data-keyring.js';

/** What an outbox row holds sealed: everything that is the message rather than its bookkeeping. */
export interface SealedEmail {
  /** The recipient's display name for the To header (may be empty). */
  name: string;
  subject: string;
  text: string;
}

const PURPOSE = 'email-outbox';

/**
 * Seals outbox messages under a key derived from the instance data key (DATA-1): an invitation's
 * email carries the invitation token, and a database reader must not be able to take it from a
 * pending row. Sealing is synchronous (the key is derived once at start), so it can run inside any
 * transaction; the key id travels with each row, so messages sealed before a data-key rotation still
 * open. The row id is bound in as associated data: a sealed body moved to another row does not open.
 */
export async function createEmailSealer(dataKeys: DataKeyring, db: Kysely<DB>) {
  // Makes the instance key if this is a first start, and learns its id.
  await dataKeys.deriveKey('instance', PURPOSE);
  const keyId = await dataKeys.within(db).activeKeyId('instance');
  const key = await dataKeys.deriveKeyFrom('instance', keyId, PURPOSE);

  return {
    seal(id: string, message: SealedEmail): string {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(Buffer.from(id));
      const body = Buffer.concat([cipher.update(JSON.stringify(message), 'utf8'), cipher.final()]);
      return `${keyId}.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
    },

    async open(id: string, sealed: string): Promise<SealedEmail> {
      const dot = sealed.indexOf('.');
      const rowKeyId = sealed.slice(0, dot);
      const rowKey = rowKeyId === keyId ? key : await dataKeys.deriveKeyFrom('instance', rowKeyId, PURPOSE);
      const raw = Buffer.from(sealed.slice(dot + 1), 'base64url');
      const decipher = createDecipheriv('aes-256-gcm', rowKey, raw.subarray(0, 12));
      decipher.setAAD(Buffer.from(id));
      decipher.setAuthTag(raw.subarray(12, 28));
      const text = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
      return JSON.parse(text) as SealedEmail;
    },
  };
}

export type EmailSealer = Awaited<ReturnType<typeof createEmailSealer>>;
