import type { Readable } from 'node:stream';

/**
 * The registration token from standard input (`register --token-stdin`), so it never appears in
 * argv (`ps`, /proc/<pid>/cmdline, shell history) nor in the environment of the process. Piped in,
 * the first line is the token; at a terminal, it is asked for without echo.
 */

/** Tokens are ~50 characters; anything this long is not one, and reading stops there. */
const MAX_INPUT_BYTES = 1024;

export class TokenInputError extends Error {}

interface TokenInput extends Readable {
  isTTY?: boolean;
  setRawMode?: (mode: boolean) => unknown;
}

export async function readTokenFromStdin(
  input: TokenInput = process.stdin,
  prompt: (text: string) => void = (text) => process.stderr.write(text),
): Promise<string> {
  const token =
    input.isTTY && input.setRawMode ? await askWithoutEcho(input, prompt) : await firstLine(input);
  if (token === '') throw new TokenInputError('no registration token on standard input');
  return token;
}

async function firstLine(input: Readable): Promise<string> {
  let text = '';
  for await (const chunk of input) {
    text += typeof chunk === 'string' ? chunk : (chunk as Buffer).toString('utf8');
    if (text.includes('\n')) break;
    if (text.length > MAX_INPUT_BYTES)
      throw new TokenInputError('standard input is too long to be a registration token');
  }
  input.destroy();
  return (text.split(/\r?\n/)[0] ?? '').trim();
}

function askWithoutEcho(input: TokenInput, prompt: (text: string) => void): Promise<string> {
  prompt('Registration token (not shown): ');
  input.setRawMode?.(true);
  input.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    let typed = '';
    const finish = (error?: Error) => {
      input.off('data', onData);
      input.setRawMode?.(false);
      input.pause();
      prompt('\n');
      if (error) reject(error);
      else resolve(typed.trim());
    };
    const onData = (chunk: string) => {
      for (const char of chunk) {
        if (char === '\r' || char === '\n') return finish();
        // Ctrl-C and Ctrl-D: raw mode delivers them as characters, not as a signal or an end.
        if (char === '\u0003' || char === '\u0004') return finish(new TokenInputError('cancelled'));
        if (char === '\u007f' || char === '\b') typed = typed.slice(0, -1);
        else if (char >= ' ') typed += char;
        if (typed.length > MAX_INPUT_BYTES) return finish(new TokenInputError('the input is too long'));
      }
    };
    input.on('data', onData);
    input.resume();
  });
}
