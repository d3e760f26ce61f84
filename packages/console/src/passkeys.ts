import type {
  AuthenticationResponseJSON,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
} from '@simplewebauthn/browser';
import { api } from './api';
import type { FactorChange } from './types';

/**
 * The browser side of passkeys (MFA-2): the server's options go to navigator.credentials through
 * @simplewebauthn/browser, loaded only when a passkey is used, so the sign-in page stays small.
 */

/** Asks one of your passkeys to sign this session's challenge; the answer goes with a sign-in step or step-up. */
export async function passkeyProof(): Promise<AuthenticationResponseJSON> {
  const optionsJSON = await api<PublicKeyCredentialRequestOptionsJSON>(
    'POST',
    '/api/auth/mfa/passkey-challenge',
  );
  const { startAuthentication } = await import('@simplewebauthn/browser');
  return startAuthentication({ optionsJSON });
}

/** Creates a passkey on this device and registers it; the first factor comes with recovery codes. */
export async function addPasskey(name: string): Promise<FactorChange> {
  const optionsJSON = await api<PublicKeyCredentialCreationOptionsJSON>(
    'POST',
    '/api/auth/mfa/passkeys/options',
  );
  const { startRegistration } = await import('@simplewebauthn/browser');
  const response = await startRegistration({ optionsJSON });
  return api('POST', '/api/auth/mfa/passkeys', { name, response });
}
