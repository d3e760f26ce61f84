import type { FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';
import type { RelyingParty } from './passkeys.js';

const NAME = 'Bulwark';

/**
 * Which relying party a passkey ceremony is for. With BULWARK_PUBLIC_URL, always that one: the
 * browser's reported origin must match it exactly. Without it, only a console opened at localhost
 * (development, tests) gets passkeys, taken from the request; any other host is told what to set,
 * because an IP address cannot be a relying party and a guessed host name would bind passkeys to it.
 */
export function relyingPartyResolver(
  publicUrl: string | undefined,
): (request: FastifyRequest) => RelyingParty {
  if (publicUrl) {
    const configured = { id: new URL(publicUrl).hostname, origin: publicUrl, name: NAME };
    return () => configured;
  }
  return (request) => {
    let origin: URL | undefined;
    try {
      origin = new URL(`${request.protocol}://${request.host}`);
    } catch {
      origin = undefined;
    }
    if (origin?.hostname !== 'localhost')
      throw new AppError(
        409,
        'public_url_required',
        'Passkeys need BULWARK_PUBLIC_URL: the address people open the console at, with a host name.',
      );
    return { id: 'localhost', origin: origin.origin, name: NAME };
  };
}
