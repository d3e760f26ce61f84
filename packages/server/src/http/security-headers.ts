import { IncomingMessage, type OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import helmet, { type HelmetOptions } from 'helmet';

/**
 * NET-2 response headers on every response, errors and 404s included. The CSP allows no inline script
 * or style and no third-party origin; the console is built to fit it. HSTS only when this server (or
 * the trusted proxy in front of it) speaks TLS, since browsers ignore it over plain HTTP anyway.
 * CORS is deliberately absent: no cross-origin caller is served by default.
 */
function helmetOptions(hsts: boolean): HelmetOptions {
  return {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        'default-src': ["'self'"],
        'script-src': ["'self'"],
        'style-src': ["'self'"],
        'img-src': ["'self'", 'data:'],
        'font-src': ["'self'"],
        'connect-src': ["'self'"],
        'object-src': ["'none'"],
        'base-uri': ["'none'"],
        'form-action': ["'self'"],
        'frame-ancestors': ["'none'"],
      },
    },
    strictTransportSecurity: hsts ? { maxAge: 63_072_000, includeSubDomains: true } : false,
    referrerPolicy: { policy: 'no-referrer' },
    crossOriginOpenerPolicy: { policy: 'same-origin' },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    crossOriginEmbedderPolicy: false,
    xFrameOptions: { action: 'deny' },
  };
}

/**
 * Permissions-Policy: every powerful browser feature is off, for this origin and for anything it might
 * embed, except what the console uses: passkeys (WebAuthn create and get) and writing to the
 * clipboard (the copy buttons beside one-time tokens), for this origin only. A script that got past
 * the CSP still could not turn on the camera or microphone, read the clipboard, locate the user, take
 * a payment or reach USB, serial, HID or MIDI devices. Only names Chromium knows are listed: an
 * unknown name makes every page log a warning, and a browser that does not know a feature's policy
 * does not apply it anyway.
 */
const DENIED_FEATURES = [
  'accelerometer',
  'autoplay',
  'browsing-topics',
  'camera',
  'captured-surface-control',
  'clipboard-read',
  'compute-pressure',
  'display-capture',
  'encrypted-media',
  'fullscreen',
  'gamepad',
  'geolocation',
  'gyroscope',
  'hid',
  'identity-credentials-get',
  'idle-detection',
  'keyboard-map',
  'local-fonts',
  'magnetometer',
  'microphone',
  'midi',
  'otp-credentials',
  'payment',
  'picture-in-picture',
  'private-state-token-issuance',
  'private-state-token-redemption',
  'screen-wake-lock',
  'serial',
  'speaker-selection',
  'storage-access',
  'sync-xhr',
  'usb',
  'window-management',
  'xr-spatial-tracking',
] as const;
const SELF_FEATURES = [
  'clipboard-write',
  'publickey-credentials-create',
  'publickey-credentials-get',
] as const;

export const PERMISSIONS_POLICY = [
  ...DENIED_FEATURES.map((feature) => `${feature}=()`),
  ...SELF_FEATURES.map((feature) => `${feature}=(self)`),
].join(', ');

/**
 * Helmet decides the headers; they depend on nothing in the request (no nonces, no per-route
 * policy), so helmet runs once, against a response that is never sent, and every response gets a
 * copy of what it set. Running helmet per request re-parsed the whole policy each time.
 */
export function securityHeaders(options: { hsts: boolean }): OutgoingHttpHeaders {
  const response = new ServerResponse(new IncomingMessage(new Socket()));
  helmet(helmetOptions(options.hsts))(response.req, response, (error?: unknown) => {
    if (error) throw error;
  });
  return {
    ...response.getHeaders(),
    'permissions-policy': PERMISSIONS_POLICY,
    // API answers carry credentials-derived data; no cache, shared or private, may keep them.
    'cache-control': 'no-store',
  };
}
