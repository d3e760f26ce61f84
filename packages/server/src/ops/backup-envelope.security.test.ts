import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalKeyProvider } from '../secrets/key-provider.js';
import { tempDir } from '../test-support/temp.js';
import {
  BackupAuthenticationError,
  CHUNK_BYTES,
  createSealer,
  openHeader,
  type Recipients,
  stanzaTypesOf,
} from './backup-envelope.js';

/**
 * Attacks on a backup file (PLAT-7) by someone who holds it: they have no passphrase and no master
 * key and try to read it; or they flip bits, cut it short, append to it, reorder its chunks or put
 * another backup's header on it, hoping a restore accepts a database they shaped. Every one of these
 * must be refused by authentication — the header MAC, or a chunk's tag with its counter and
 * last-chunk flag — never accepted, and never half-applied.
 */

const masterKeys = (key = randomBytes(32)) =>
  createLocalKeyProvider({ current: key, previous: [] }, () => ({ current: key, previous: [] }));
const keyring = masterKeys();
const PASSPHRASE = 'correct horse battery staple';

let dir: { path: string; remove(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir('envelope');
});
afterAll(() => dir.remove());

let counter = 0;
async function seal(plaintext: Buffer, recipients: Recipients): Promise<string> {
  const file = path.join(dir.path, `b${counter++}.bwb`);
  const { header, payload } = await createSealer(recipients);
  const chunks: Buffer[] = [header];
  const sink = new PassThrough();
  sink.on('data', (chunk: Buffer) => chunks.push(chunk));
  // Fed in odd-sized pieces: chunking must not depend on how the plaintext arrives.
  const pieces = [];
  for (let at = 0; at < plaintext.length; at += 10_007) pieces.push(plaintext.subarray(at, at + 10_007));
  await pipeline(Readable.from(pieces), payload, sink);
  writeFileSync(file, Buffer.concat(chunks));
  return file;
}

async function open(file: string, recipients: Recipients): Promise<Buffer> {
  const opened = await openHeader(file, recipients);
  const bytes = readFileSync(file).subarray(opened.payloadOffset);
  const chunks: Buffer[] = [];
  const sink = new PassThrough();
  sink.on('data', (chunk: Buffer) => chunks.push(chunk));
  await pipeline(Readable.from([bytes.subarray(0, 70_000), bytes.subarray(70_000)]), opened.payload(), sink);
  return Buffer.concat(chunks);
}

function withBytes(file: string, change: (bytes: Buffer) => Buffer): string {
  const changed = `${file}.changed${counter++}`;
  writeFileSync(changed, change(Buffer.from(readFileSync(file))));
  return changed;
}

const refused = (promise: Promise<unknown>) =>
  expect(promise).rejects.toBeInstanceOf(BackupAuthenticationError);

describe('backup envelope', () => {
  const plaintext = randomBytes(3 * CHUNK_BYTES + 1234);
  let file: string;
  let headerLength: number;
  let both: string;
  beforeAll(async () => {
    file = await seal(plaintext, { masterKeys: keyring });
    headerLength = (await openHeader(file, { masterKeys: keyring })).payloadOffset;
  });

  it('round-trips any length, including an exact multiple of the chunk size and nothing at all', async () => {
    expect((await open(file, { masterKeys: keyring })).equals(plaintext)).toBe(true);
    for (const length of [0, 1, CHUNK_BYTES, 2 * CHUNK_BYTES]) {
      const data = randomBytes(length);
      expect(
        (await open(await seal(data, { masterKeys: keyring }), { masterKeys: keyring })).equals(data),
      ).toBe(true);
    }
  });

  it('opens with the passphrase or the master key when made for both; a wrong passphrase or another key opens nothing', async () => {
    both = await seal(plaintext, { masterKeys: keyring, passphrase: PASSPHRASE });
    expect((await open(both, { passphrase: PASSPHRASE })).equals(plaintext)).toBe(true);
    expect((await open(both, { masterKeys: keyring })).equals(plaintext)).toBe(true);
    await refused(open(both, { passphrase: 'correct horse battery stapler' }));
    await refused(open(both, { masterKeys: masterKeys() }));
    await refused(open(file, { passphrase: PASSPHRASE }));
  });

  it('holds no plaintext: not the payload, not a piece of it', () => {
    const bytes = readFileSync(file);
    expect(bytes.includes(plaintext.subarray(1000, 1032))).toBe(false);
    expect(bytes.includes(plaintext.subarray(3 * CHUNK_BYTES, 3 * CHUNK_BYTES + 32))).toBe(false);
  });

  it('refuses a flipped bit anywhere: in the header, its MAC, and the first, a middle and the last chunk', async () => {
    const size = readFileSync(file).length;
    const offsets = [
      0, // the magic
      20, // the keyring stanza
      headerLength - 30, // the MAC itself
      headerLength - 60, // the payload line (nonce)
      headerLength + 5, // the first chunk
      headerLength + CHUNK_BYTES + 16 + 100, // the second
      size - 3, // the last chunk's tag
    ];
    for (const offset of offsets) {
      const flipped = withBytes(file, (bytes) => {
        bytes[offset] = bytes[offset]! ^ 0x01;
        return bytes;
      });
      await expect(open(flipped, { masterKeys: keyring }), `bit flipped at ${offset}`).rejects.toThrow();
    }
  });

  it('refuses a backup cut short at a chunk boundary or inside a chunk, or extended past its last chunk', async () => {
    const sealedChunk = CHUNK_BYTES + 16;
    // Dropping the last chunk leaves a stream of whole chunks, none flagged last.
    await refused(
      open(
        withBytes(file, (b) => b.subarray(0, headerLength + 3 * sealedChunk)),
        { masterKeys: keyring },
      ),
    );
    await refused(
      open(
        withBytes(file, (b) => b.subarray(0, headerLength + sealedChunk + 500)),
        { masterKeys: keyring },
      ),
    );
    await refused(
      open(
        withBytes(file, (b) => b.subarray(0, headerLength)),
        { masterKeys: keyring },
      ),
    );
    // A copy of the first chunk appended after the last.
    await refused(
      open(
        withBytes(file, (b) => Buffer.concat([b, b.subarray(headerLength, headerLength + sealedChunk)])),
        { masterKeys: keyring },
      ),
    );
  });

  it('refuses chunks reordered', async () => {
    const sealedChunk = CHUNK_BYTES + 16;
    const swapped = withBytes(file, (b) => {
      const first = b.subarray(headerLength, headerLength + sealedChunk);
      const second = b.subarray(headerLength + sealedChunk, headerLength + 2 * sealedChunk);
      return Buffer.concat([
        b.subarray(0, headerLength),
        second,
        first,
        b.subarray(headerLength + 2 * sealedChunk),
      ]);
    });
    await refused(open(swapped, { masterKeys: keyring }));
  });

  it("refuses another backup's header on this payload, even one for the same master key", async () => {
    const other = await seal(randomBytes(100), { masterKeys: keyring });
    const otherHeader = (await openHeader(other, { masterKeys: keyring })).payloadOffset;
    const spliced = withBytes(file, (b) =>
      Buffer.concat([readFileSync(other).subarray(0, otherHeader), b.subarray(headerLength)]),
    );
    await refused(open(spliced, { masterKeys: keyring }));
  });

  it('refuses a header that asks for a ruinous scrypt cost before spending it', async () => {
    // Made from the backup of the test above (scrypt at its real cost is slow, so it is derived sparingly).
    const costly = withBytes(both, (b) =>
      Buffer.from(b.toString('latin1').replace(/ 17 /, ' 40 '), 'latin1'),
    );
    await expect(open(costly, { passphrase: PASSPHRASE })).rejects.toThrow(/cost/);
  });

  it('refuses, as it reads the header and before any scrypt, a cost above what backups use and a second passphrase stanza', async () => {
    // A forged header within the old bound (2^19, 512 MiB and seconds of scrypt), or the one real
    // stanza repeated (some eighty fit in a header): each derivation runs before the MAC can say
    // the header is forged. Both are refused already where the header is parsed, passphrase or not.
    const above = withBytes(both, (b) => Buffer.from(b.toString('latin1').replace(/ 17 /, ' 19 '), 'latin1'));
    await expect(stanzaTypesOf(above)).rejects.toThrow(
      /passphrase cost of 2\^19: backups use 2\^17 to 2\^18/,
    );
    await expect(open(above, { passphrase: PASSPHRASE })).rejects.toThrow(/cost of 2\^19/);
    const doubled = withBytes(both, (b) => {
      const text = b.toString('latin1');
      const stanza = /^-> scrypt .*$/m.exec(text)![0];
      return Buffer.from(text.replace(stanza, `${stanza}\n${stanza}`), 'latin1');
    });
    await expect(stanzaTypesOf(doubled)).rejects.toThrow(
      /2 passphrase \(scrypt\) stanzas: a backup has at most one/,
    );
    await refused(open(doubled, { passphrase: PASSPHRASE }));
  });
});
