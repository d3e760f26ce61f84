import { z } from 'zod';
import { recordDenial } from '../access/access.service.js';
import { callerOf } from '../access/caller.js';
import type { AuditService } from '../audit/audit.service.js';
import { AppError } from '../errors.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import { OrgSlug } from '../http/schemas.js';
import { type BackupService, NotInstanceOwnerError } from './backup.service.js';

const OrgParams = z.strictObject({ org: OrgSlug });

/**
 * A download whose client takes nothing for this long is ended: on PostgreSQL, pg_dump holds its
 * snapshot (and so old row versions, VACUUM held back) until the last byte is read.
 */
export const DOWNLOAD_IDLE_TIMEOUT_MS = 60_000;

/** What opens the backup: the installation's master key, or a passphrase the caller chooses now. */
const BackupRequest = z.discriminatedUnion('recipient', [
  z.strictObject({ recipient: z.literal('keyring') }),
  z.strictObject({
    recipient: z.literal('passphrase'),
    // scrypt slows guessing; it cannot save a short passphrase.
    passphrase: z.string().min(12, 'must be at least 12 characters').max(1024),
  }),
]);

/**
 * PLAT-7: an encrypted backup of the whole installation, streamed as a download. Owner-only
 * (`backups:manage`, held over every organization: see assertInstanceOwner), after a recent
 * sign-in (step-up, MFA-5), by a person in a browser session: an API key acts in one organization
 * and a backup spans them all. Audited as `backup.created`; the `export` rate-limit class.
 */
export function backupRoutes(deps: { backups: BackupService; audit: AuditService }): RouteDefinition[] {
  return [
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/backups',
      operationId: 'createBackup',
      summary:
        'Download an encrypted backup of the whole installation (sessions left out), for the master key or a passphrase',
      tags: ['ops'],
      access: { permission: 'backups:manage', privileged: true },
      rateLimit: 'export',
      params: OrgParams,
      body: BackupRequest,
      response: {
        200: rawResponse(
          'application/octet-stream',
          'The backup (bulwark-backup/v1 envelope, docs/backups.md)',
        ),
      },
      handler: async ({ principal, request, reply, body }) => {
        const caller = callerOf(principal, request);
        const refuse = async (reason: string, code: string, message: string) => {
          await recordDenial(deps.audit, {
            orgId: caller.org.id,
            actor: caller.actor,
            context: caller.context,
            permission: 'backups:manage',
            route: 'POST /api/orgs/:org/backups',
            reason,
          });
          throw new AppError(403, code, message);
        };
        if (!principal?.session)
          await refuse(
            'a backup spans every organization; an API key acts in one',
            'api_key_not_allowed',
            'A backup holds every organization: it needs a signed-in owner, not an API key (or use `bulwark backup create` on the host).',
          );
        try {
          await deps.backups.assertInstanceOwner(caller.userId);
        } catch (error) {
          if (!(error instanceof NotInstanceOwnerError)) throw error;
          await refuse(
            error.message,
            'instance_owner_required',
            `Only the instance's owner may take a backup: ${error.message}.`,
          );
        }
        const backup = await deps.backups.create({
          keyring: body.recipient === 'keyring',
          passphrase: body.recipient === 'passphrase' ? body.passphrase : undefined,
          actor: caller.actor,
          context: caller.context,
          idleTimeoutMs: DOWNLOAD_IDLE_TIMEOUT_MS,
        });
        const stamp = new Date(backup.manifest.createdAt).toISOString().replace(/[:.]/g, '-');
        reply.type('application/octet-stream');
        reply.header('content-disposition', `attachment; filename="bulwark-${stamp}.bwb"`);
        reply.header('cache-control', 'no-store');
        if (backup.size !== undefined) reply.header('content-length', String(backup.size));
        return backup.stream;
      },
    }),
  ];
}
