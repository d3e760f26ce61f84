/**
 * The words of notification emails. Plain text only. They say what happened and where to look, and
 * nothing more: no credential, no link that signs anyone in, so a stolen or forwarded mailbox learns
 * only what its owner was told. The one link with a token is an invitation's, and its token is in
 * the URL fragment (NET-5), which browsers never send to a server or put in a Referer header.
 */

export interface ComposedEmail {
  subject: string;
  text: string;
}

const FOOTER = (consoleUrl: string) =>
  `\n\n-- \nBulwark, ${consoleUrl}\nYou get this email because it concerns your account. Bulwark never asks for your password or codes by email.`;

/** A notice of the console's inbox, as an email. */
export function noticeEmail(notice: { title: string; body: string }, consoleUrl: string): ComposedEmail {
  return {
    subject: notice.title,
    text: `${notice.body}\n\nDetails are in your notifications at ${consoleUrl}.${FOOTER(consoleUrl)}`,
  };
}

export function invitationEmail(input: {
  orgName: string;
  inviterName: string;
  role: string;
  token: string;
  expiresAt: number;
  consoleUrl: string;
}): ComposedEmail {
  return {
    subject: `You are invited to ${input.orgName} on Bulwark`,
    text: `${input.inviterName} invited you to join ${input.orgName} on Bulwark as ${input.role}.\n\nTo accept, open this link (it works once, until ${new Date(input.expiresAt).toISOString()}):\n\n${input.consoleUrl}/invitations/accept#${input.token}\n\nIf you did not expect this invitation, ignore this email.${FOOTER(input.consoleUrl)}`,
  };
}

export function breakGlassEmail(input: {
  orgName: string;
  who: string;
  at: number;
  ip: string | undefined;
  consoleUrl: string;
}): ComposedEmail {
  return {
    subject: `ALERT: break-glass sign-in to ${input.orgName}`,
    text: `${input.who} signed in to ${input.orgName} with the break-glass account (a password and second factor while the organization requires single sign-on) at ${new Date(input.at).toISOString()}${input.ip ? ` from address ${input.ip}` : ''}.\n\nThis account is for the day the identity provider is down. If that is not what is happening, treat it as a compromise: check the audit log (critical events) and end that account's sessions.${FOOTER(input.consoleUrl)}`,
  };
}
