import { newId } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.js';
import { type ComposedEmail, invitationEmail } from './email-messages.js';
import { createEmailOutboxStore } from './email-outbox.store.js';
import type { EmailSealer } from './email-seal.js';

/** What kind of thing an email tells: the inbox's kinds, and the two that are email only. */
export type EmailKind = string;

/**
 * Puts emails in the outbox, always inside the caller's transaction: the email exists exactly when
 * the change it tells about committed (a rolled-back change sends nothing, a committed one is never
 * forgotten). Sending is the worker's (email-worker.ts).
 */
export function createEmailOutbox(deps: { sealer: EmailSealer; consoleUrl: string; clock: () => number }) {
  const { sealer, consoleUrl, clock } = deps;

  async function enqueue(
    trx: Kysely<DB>,
    input: { userId: string | null; kind: EmailKind; to: string; name: string; email: ComposedEmail },
  ): Promise<void> {
    const now = clock();
    const id = newId('eml', now);
    await createEmailOutboxStore(trx).insert({
      id,
      user_id: input.userId,
      kind: input.kind,
      recipient: input.to,
      sealed: sealer.seal(id, { name: input.name, subject: input.email.subject, text: input.email.text }),
      state: 'pending',
      attempts: 0,
      next_attempt_at: now,
      last_error: null,
      created_at: now,
      sent_at: null,
    });
  }

  return {
    consoleUrl,
    enqueue,

    /** The invitee's email, with the link the console accepts invitations at (token in the fragment). */
    invitation(
      trx: Kysely<DB>,
      input: {
        email: string;
        orgName: string;
        inviterName: string;
        role: string;
        token: string;
        expiresAt: number;
      },
    ): Promise<void> {
      return enqueue(trx, {
        userId: null,
        kind: 'invitation',
        to: input.email,
        name: '',
        email: invitationEmail({ ...input, consoleUrl }),
      });
    },
  };
}

export type EmailOutbox = ReturnType<typeof createEmailOutbox>;
