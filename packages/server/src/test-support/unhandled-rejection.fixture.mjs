// Preloaded into a real `bulwark serve` or `bulwark-agent run` process by the last-resort tests
// (NODE_OPTIONS=--import=<this file>), so that the code under test carries no test-only branch: the
// first HTTP request the process receives (the server) or makes (the agent dialing its server) leaves
// a promise rejected with nobody to handle it, as a bug would. The error carries a password field, which
// must not reach the log in clear.
import diagnostics from 'node:diagnostics_channel';

export const FIXTURE_MESSAGE = 'nobody handled this rejection';
export const FIXTURE_SECRET = 'fixture-password-that-must-not-be-logged';

let fired = false;
function rejectOnce() {
  if (fired) return;
  fired = true;
  const error = Object.assign(new Error(FIXTURE_MESSAGE), { password: FIXTURE_SECRET });
  void Promise.reject(error);
}

diagnostics.subscribe('http.server.request.start', rejectOnce);
diagnostics.subscribe('http.client.request.start', rejectOnce);
