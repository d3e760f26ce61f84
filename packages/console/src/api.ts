/**
 * The console's one way to the API. Same-origin, cookie session; the CSRF token lives in this
 * module's memory only (never in storage a script or an extension could read later), and is sent on
 * every state-changing request. A request the server refuses for want of a recent sign-in
 * (`step_up_required`) asks the person to re-prove it, then is sent once more.
 */

export interface FieldProblem {
  path: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields: FieldProblem[] = [],
    readonly requestId?: string,
  ) {
    super(message);
  }
}

let csrfToken: string | undefined;
let stepUpPrompt: (() => Promise<boolean>) | undefined;
let onSignedOut: (() => void) | undefined;

export function setCsrfToken(token: string | undefined): void {
  csrfToken = token;
}

/** Who asks for a re-authentication when the server wants one; resolves true once it is done. */
export function setStepUpPrompt(prompt: (() => Promise<boolean>) | undefined): void {
  stepUpPrompt = prompt;
}

/** What happens when the session ends under the console's feet (expired, revoked elsewhere). */
export function setSignedOutHandler(handler: (() => void) | undefined): void {
  onSignedOut = handler;
}

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

async function send(method: Method, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const init: RequestInit = { method, credentials: 'same-origin', headers: { ...headers } };
  const sent = init.headers as Record<string, string>;
  if (method !== 'GET' && csrfToken) sent['x-csrf-token'] = csrfToken;
  if (body !== undefined) {
    sent['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

async function errorOf(response: Response): Promise<ApiError> {
  const payload = (await response.json().catch(() => undefined)) as
    | { error?: { code?: string; message?: string; fields?: FieldProblem[]; requestId?: string } }
    | undefined;
  const error = payload?.error;
  return new ApiError(
    response.status,
    error?.code ?? 'http_error',
    error?.message ?? `The server answered ${response.status}.`,
    error?.fields ?? [],
    error?.requestId,
  );
}

export async function api<T>(
  method: Method,
  path: string,
  body?: unknown,
  headers?: Record<string, string>,
): Promise<T> {
  let response = await send(method, path, body, headers);
  if (!response.ok) {
    let error = await errorOf(response);
    if (error.code === 'step_up_required' && stepUpPrompt && (await stepUpPrompt())) {
      response = await send(method, path, body, headers);
      if (response.ok) return (await response.json()) as T;
      error = await errorOf(response);
    }
    if (error.status === 401 && !path.startsWith('/api/auth/')) onSignedOut?.();
    throw error;
  }
  return (await response.json()) as T;
}

/** A file the API streams (an export): fetched with the session, handed to the browser to save. */
export async function download(path: string, filename: string): Promise<void> {
  const response = await send('GET', path);
  if (!response.ok) throw await errorOf(response);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  link.click();
  URL.revokeObjectURL(url);
}

/** `/api/orgs/<org>…`, with the slug escaped. */
export const orgPath = (org: string, rest: string) => `/api/orgs/${encodeURIComponent(org)}${rest}`;
