import { isWellFormedToken } from '@bulwark/protocol';

/**
 * `bulwark api`: one HTTP API call with an API key (KEY-1), for scripts and CI. The key comes from the
 * environment only: a key on the command line would be visible to every user of the host in the
 * process list, and kept in shell history.
 */

export const API_KEY_VARIABLE = 'BULWARK_API_KEY';
export const SERVER_VARIABLE = 'BULWARK_SERVER_URL';
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

export class ApiCallError extends Error {}

export interface ApiCall {
  method: string;
  path: string;
  server?: string | undefined;
  data?: string | undefined;
  env: NodeJS.ProcessEnv;
}

const pretty = (json: string): string => {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
};

/** Sends the call; returns the status and the body, pretty-printed when it is JSON. */
export async function callApi(call: ApiCall): Promise<{ status: number; body: string }> {
  const method = call.method.toUpperCase();
  if (!(METHODS as readonly string[]).includes(method))
    throw new ApiCallError(`unknown method ${call.method}; use one of ${METHODS.join(', ')}`);
  if (!call.path.startsWith('/api/')) throw new ApiCallError('the path must start with /api/');
  const key = call.env[API_KEY_VARIABLE];
  if (!key) throw new ApiCallError(`set ${API_KEY_VARIABLE} to an API key (bwk_…)`);
  if (!isWellFormedToken(key, 'bwk'))
    throw new ApiCallError(`${API_KEY_VARIABLE} is not an API key: a bwk_ token, copied whole`);
  const server = call.server ?? call.env[SERVER_VARIABLE];
  if (!server) throw new ApiCallError(`name the server with --server or ${SERVER_VARIABLE}`);
  let url: URL;
  try {
    url = new URL(call.path, server);
  } catch {
    throw new ApiCallError(`${server} is not a URL`);
  }
  if (url.protocol !== 'https:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname))
    throw new ApiCallError('an API key travels over https only (plain http on loopback)');
  if (call.data !== undefined) {
    try {
      JSON.parse(call.data);
    } catch {
      throw new ApiCallError('--data is not JSON');
    }
  }
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      // A redirect would carry the key to wherever it points.
      redirect: 'error',
      headers: {
        authorization: `Bearer ${key}`,
        ...(call.data === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(call.data === undefined ? {} : { body: call.data }),
    });
  } catch (error) {
    throw new ApiCallError(
      `could not reach ${url.origin}: ${(error as Error).cause ?? (error as Error).message}`,
    );
  }
  const text = await response.text();
  const body = response.headers.get('content-type')?.startsWith('application/json') ? pretty(text) : text;
  return { status: response.status, body };
}
