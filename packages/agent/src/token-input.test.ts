import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readTokenFromStdin } from './token-input.js';

/** A terminal as the agent sees one: a stream that says it is a TTY and takes raw mode. */
function terminal() {
  const stream = Object.assign(new PassThrough(), {
    isTTY: true,
    modes: [] as boolean[],
    setRawMode(mode: boolean) {
      stream.modes.push(mode);
      return stream;
    },
  });
  return stream;
}

describe('the registration token from standard input', () => {
  it('at a terminal, asks without echo, honours backspace, and leaves raw mode after', async () => {
    const tty = terminal();
    const shown: string[] = [];
    const token = readTokenFromStdin(tty, (text) => shown.push(text));
    tty.write('bwr_abcX\u007fdef');
    tty.write('\r');
    expect(await token).toBe('bwr_abcdef');
    expect(tty.modes).toEqual([true, false]);
    // Only the prompt and the line end: nothing typed is ever written back.
    expect(shown.join('')).toBe('Registration token (not shown): \n');
  });

  it('at a terminal, Ctrl-C cancels instead of registering with half a token', async () => {
    const tty = terminal();
    const token = readTokenFromStdin(tty, () => {});
    tty.write('bwr_ab\u0003');
    await expect(token).rejects.toThrow('cancelled');
    expect(tty.modes).toEqual([true, false]);
  });

  it('piped, takes the first line, trimmed, and refuses nothing or too much', async () => {
    const piped = new PassThrough();
    piped.end('  bwr_token  \r\nsecond line\n');
    expect(await readTokenFromStdin(piped, () => {})).toBe('bwr_token');
    const empty = new PassThrough();
    empty.end('');
    await expect(readTokenFromStdin(empty, () => {})).rejects.toThrow(
      'no registration token on standard input',
    );
    const flood = new PassThrough();
    flood.end('x'.repeat(4096));
    await expect(readTokenFromStdin(flood, () => {})).rejects.toThrow('too long');
  });
});
