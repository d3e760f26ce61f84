import type { zxcvbn } from '@zxcvbn-ts/core';
import type { BreachedPasswords } from './breached-passwords.js';

/**
 * AUTH-1: which passwords are accepted. Length 8 to 256 characters; refused when it is in the shipped
 * list of common passwords (zxcvbn-ts's, ~49,000 entries), when it contains a word from its context
 * (the product, the organization, the user's email), or when zxcvbn scores it below 3 of 4 ("safely
 * unguessable: moderate protection from offline slow-hash scenario"); and, when a breached-password
 * range service is configured, when it is in that corpus (breached-passwords.ts).
 */

interface StrengthCheck {
  common: Set<string>;
  score: typeof zxcvbn;
}

/**
 * The dictionaries take about 8 MB of heap, so they are loaded by the first password checked rather
 * than at startup: most servers set a password rarely. A smaller heap at startup also bounds the
 * garbage V8 lets build up before its first full collection, which bench/fleet measured in the
 * resident memory of a fleet connecting at once.
 */
let strengthCheck: Promise<StrengthCheck> | undefined;

function loadStrengthCheck(): Promise<StrengthCheck> {
  strengthCheck ??= (async () => {
    const [core, common] = await Promise.all([
      import('@zxcvbn-ts/core'),
      import('@zxcvbn-ts/language-common'),
    ]);
    core.zxcvbnOptions.setOptions({ dictionary: common.dictionary, graphs: common.adjacencyGraphs });
    return {
      common: new Set(common.dictionary.passwords.map((word) => word.toLowerCase())),
      score: core.zxcvbn,
    };
  })().catch((error: unknown) => {
    strengthCheck = undefined; // the next check tries again
    throw error;
  });
  return strengthCheck;
}

export const MIN_LENGTH = 8;
export const MAX_LENGTH = 256;
const MIN_SCORE = 3;
const MIN_CONTEXT_WORD = 4;

export type PasswordProblem =
  | { code: 'too_short' | 'too_long' | 'common' | 'breached'; message: string }
  | { code: 'contains_context'; message: string; word: string }
  | { code: 'too_weak'; message: string };

export interface PasswordContext {
  email?: string;
  orgName?: string;
  orgSlug?: string;
}

/** Words a password must not contain: ones an attacker targeting this installation would try first. */
function contextWords(context: PasswordContext): string[] {
  const words = ['bulwark'];
  if (context.email) words.push(context.email.split('@')[0] ?? '');
  if (context.orgName) words.push(...context.orgName.split(/[^\p{L}\p{N}]+/u));
  if (context.orgSlug) words.push(...context.orgSlug.split(/[^a-z0-9]+/));
  return [...new Set(words.map((w) => w.toLowerCase()).filter((w) => w.length >= MIN_CONTEXT_WORD))];
}

/** The first reason to refuse the password, or undefined when it is acceptable. Never logs or echoes it. */
export async function passwordProblem(
  password: string,
  context: PasswordContext = {},
  /** The breached-password check, when configured; asked last, so refused passwords never leave. */
  breached?: BreachedPasswords,
): Promise<PasswordProblem | undefined> {
  const length = [...password].length;
  if (length < MIN_LENGTH) return { code: 'too_short', message: `Use at least ${MIN_LENGTH} characters.` };
  if (length > MAX_LENGTH) return { code: 'too_long', message: `Use at most ${MAX_LENGTH} characters.` };
  const lower = password.toLowerCase();
  const strength = await loadStrengthCheck();
  if (strength.common.has(lower))
    return { code: 'common', message: 'This password is on a list of commonly used passwords.' };
  const word = contextWords(context).find((w) => lower.includes(w));
  if (word) {
    return {
      code: 'contains_context',
      message: 'The password contains a word from your account or organization.',
      word,
    };
  }
  // zxcvbn's cost grows with length; the first 100 characters decide the score of any longer password.
  const result = strength.score(password.slice(0, 100), contextWords(context));
  if (result.score < MIN_SCORE) {
    return {
      code: 'too_weak',
      message:
        result.feedback.warning ||
        'This password would be easy to guess; make it longer or less predictable.',
    };
  }
  if (breached && (await breached.isBreached(password)))
    return {
      code: 'breached',
      message: 'This password has appeared in a data breach; choose another one.',
    };
  return undefined;
}
