'use strict';
// The request of bench/login-flood.bench.ts. autocannon's worker thread takes only a file path, hence
// this file. Every attempt names an email nobody has, with a wrong password, and comes from a fresh
// client address (a random /64 of the IPv6 documentation prefix 2001:db8::/32, RFC 3849) in
// X-Forwarded-For, which the server believes from its trusted proxy 127.0.0.1: a distributed flood
// that no per-address or per-account limit stops. The address is only a header value; every
// connection goes to the loopback server.
const hex = () => Math.floor(Math.random() * 0x10000).toString(16);

module.exports = (request) => ({
  ...request,
  headers: { ...request.headers, 'x-forwarded-for': `2001:db8:${hex()}:${hex()}::1` },
  body: JSON.stringify({ email: `flood-${hex()}${hex()}@bench.invalid`, password: `wrong-${hex()}${hex()}` }),
});
