/**
 * NET-1: what the native TLS listener negotiates. TLS 1.3 suites all pair an ephemeral key exchange
 * with an AEAD cipher. For TLS 1.2, which the operator may allow (`BULWARK_TLS_MIN_VERSION`), Node's
 * default list also offers static-RSA key exchange (no forward secrecy: the certificate's key opens
 * every recorded session), CBC suites (padding oracles, Lucky13) and, through `HIGH`, CCM8 (64-bit
 * tags). TLS 1.2 is narrowed here to ECDHE with AES-GCM or ChaCha20-Poly1305, Mozilla's
 * "intermediate" list without finite-field DHE.
 *
 * The TLS 1.3 names must be listed too: Node hands the `TLS_` entries of the list to TLS 1.3, and a
 * list without any would turn TLS 1.3 off.
 */
const TLS13_SUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'];

const TLS12_SUITES = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
];

export const TLS_POLICY = {
  ciphers: [...TLS13_SUITES, ...TLS12_SUITES].join(':'),
  // Key exchange groups, TLS 1.3 included: elliptic curves only. OpenSSL's default list also has the
  // finite-field groups (ffdhe2048…), slower and weaker per bit, which a client could otherwise pick.
  ecdhCurve: 'X25519:P-256:P-384',
  // The server's order decides, so a client preferring a weaker suite of the list does not get it.
  honorCipherOrder: true,
} as const;
