import UAParser from 'ua-parser-js';

/**
 * What a person recognises a session by (AUTH-7): browser, operating system and kind of device,
 * read from the User-Agent on the server so the console ships no parser (its first load stays
 * small). Deliberately location-free: no address lookup leaves the server or reaches a third party.
 */
export interface DeviceView {
  /** "Firefox 128", or null when the header names no browser. */
  browser: string | null;
  /** "Ubuntu", "Windows 10", "iOS 17.5", or null. */
  os: string | null;
  /** "desktop", "mobile", "tablet"…; a header naming no device is a desktop browser or a program. */
  type: string;
}

/** Longer headers are junk or an attack on the parser's regular expressions; nothing real is that long. */
const MAX_USER_AGENT = 512;

const named = (name: string | undefined, version: string | undefined) =>
  name ? (version ? `${name} ${version}` : name) : null;

export function describeDevice(userAgent: string | null | undefined): DeviceView {
  if (!userAgent) return { browser: null, os: null, type: 'unknown' };
  const parsed = new UAParser(userAgent.slice(0, MAX_USER_AGENT)).getResult();
  return {
    // The major version is enough to recognise a browser; the full one changes every few weeks.
    browser: named(parsed.browser.name, parsed.browser.major),
    os: named(parsed.os.name, parsed.os.version),
    type: parsed.device.type ?? (parsed.browser.name || parsed.os.name ? 'desktop' : 'unknown'),
  };
}

/**
 * The same device for "is this sign-in from somewhere new" (NOTIFY-1): browser family, OS family and
 * device kind, without versions, so a browser update is not a new device.
 */
export function deviceKey(userAgent: string | null | undefined): string {
  if (!userAgent) return 'unknown';
  const parsed = new UAParser(userAgent.slice(0, MAX_USER_AGENT)).getResult();
  const browser = parsed.browser.name ?? '';
  const os = parsed.os.name ?? '';
  if (!browser && !os) return `agent:${userAgent.slice(0, 64)}`;
  return `${browser}|${os}|${parsed.device.type ?? 'desktop'}`;
}
