import { isIP } from 'node:net';
import nodemailer from 'nodemailer';
import type { SmtpConfig } from '../config.js';
import type { BackingTls } from '../net/backing-tls.js';

export interface OutgoingEmail {
  to: { name: string; address: string };
  subject: string;
  text: string;
}

export interface EmailTransport {
  /** Resolves once the SMTP server accepted the message for its recipient; rejects otherwise. */
  send(message: OutgoingEmail): Promise<void>;
  close(): void;
}

/** How long the SMTP server may take at each step before the attempt counts as failed and is retried. */
const CONNECT_MS = 10_000;
const SOCKET_MS = 30_000;

/**
 * A nodemailer transport built from the settings (NET-4): TLS always — STARTTLS required on a
 * submission port (`requireTLS`: a server, or a man in the middle, that does not offer STARTTLS is
 * refused rather than talked to in clear) or TLS from the first byte — and the certificate verified
 * against the configured CA, host name included. A new transport per batch of sends reads the CA file
 * again, so a corrected or rotated CA takes effect without a restart. The password is handed to
 * nodemailer only; nothing here logs (nodemailer's own logger stays off).
 */
export function createEmailTransport(smtp: SmtpConfig, tls: BackingTls): EmailTransport {
  const transport = nodemailer.createTransport({
    host: smtp.host,
    port: smtp.port,
    secure: smtp.tls === 'implicit',
    requireTLS: smtp.tls === 'starttls',
    ignoreTLS: false,
    // SNI names the host (not allowed for an IP address); the certificate is checked against it either way.
    tls: { ...tls.options('smtp', smtp.caFile), ...(isIP(smtp.host) === 0 ? { servername: smtp.host } : {}) },
    ...(smtp.user ? { auth: { user: smtp.user, pass: smtp.password ?? '' } } : {}),
    connectionTimeout: CONNECT_MS,
    greetingTimeout: CONNECT_MS,
    socketTimeout: SOCKET_MS,
    logger: false,
    debug: false,
    // Messages are plain text built here; nothing may make nodemailer read a file or fetch a URL.
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  return {
    async send(message) {
      const info = await transport.sendMail({
        from: smtp.from,
        to: { name: message.to.name, address: message.to.address },
        subject: message.subject,
        text: message.text,
      });
      // A server may accept the transaction yet refuse the one recipient.
      if (info.rejected.length > 0)
        throw new Error(`the SMTP server refused the recipient: ${info.response}`);
    },
    close: () => transport.close(),
  };
}
