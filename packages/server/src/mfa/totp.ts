import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generateSecret, generateURI, verify } from 'otplib';

/**
 * TOTP (RFC 6238, MFA-1): SHA-1, 6 digits, 30-second steps, as every authenticator app speaks it (the
 * documented exception to SHA-256 in docs/security.md). A code is accepted in its own step and in the
 * one before it (a phone clock a little behind, or a code typed as the step turned), never a later
 * one; the caller stores the step accepted so that no code, nor an older one, is accepted again.
 */

const crypto = new NodeCryptoPlugin();
export const TOTP_PERIOD_SECONDS = 30;
/** 160 bits, RFC 4226's recommendation. */
const SEED_BYTES = 20;

/** A new seed, base32 (what authenticator apps take). */
export const newTotpSeed = (): string => generateSecret({ crypto, length: SEED_BYTES });

/** The `otpauth://` URI a QR code carries. */
export const totpUri = (seed: string, account: string, issuer: string): string =>
  generateURI({ issuer, label: account, secret: seed, period: TOTP_PERIOD_SECONDS });

/**
 * The time step `code` belongs to, if it is the code of the current step or the previous one, and
 * later than `afterStep`; undefined otherwise. Verified on the server's clock.
 */
export async function acceptedStep(
  seed: string,
  code: string,
  nowMs: number,
  afterStep: number | null,
): Promise<number | undefined> {
  if (!/^\d{6}$/.test(code)) return undefined;
  // A step used already is the current one or later (the clock went back, or another instance runs
  // ahead): nothing can be accepted now, and otplib would throw rather than say so.
  const currentStep = Math.floor(nowMs / 1000 / TOTP_PERIOD_SECONDS);
  if (afterStep !== null && afterStep >= currentStep) return undefined;
  const result = await verify({
    secret: seed,
    token: code,
    crypto,
    period: TOTP_PERIOD_SECONDS,
    epoch: Math.floor(nowMs / 1000),
    epochTolerance: [TOTP_PERIOD_SECONDS, 0],
    ...(afterStep === null ? {} : { afterTimeStep: afterStep }),
  });
  return result.valid && 'timeStep' in result ? result.timeStep : undefined;
}
