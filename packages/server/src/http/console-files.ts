import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

/** Where `npm run build` puts the console, beside this package in the repository. */
export const BUILT_CONSOLE_DIR = fileURLToPath(new URL('../../../console/dist/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};
const COMPRESSIBLE = new Set(['.html', '.js', '.css', '.svg', '.json', '.txt']);

export interface ConsoleFile {
  type: string;
  identity: Buffer;
  br?: Buffer;
  gzip?: Buffer;
}

/**
 * The built console. The file list is read at start; each file is read and compressed (brotli and
 * gzip, at their best ratio) the first time it is asked for, then served from memory: the whole
 * console is a few hundred kilobytes, and a server that nobody opens the console of pays nothing.
 * Keys are URL paths ("/index.html", "/assets/…").
 */
export function createConsoleFiles(dir: string) {
  const paths = new Map<string, string>();
  if (existsSync(path.join(dir, 'index.html'))) {
    for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const full = path.join(entry.parentPath, entry.name);
      paths.set(`/${path.relative(dir, full).split(path.sep).join('/')}`, full);
    }
  }
  const loaded = new Map<string, ConsoleFile>();

  function load(full: string): ConsoleFile {
    const extension = path.extname(full);
    const identity = readFileSync(full);
    const file: ConsoleFile = { type: TYPES[extension] ?? 'application/octet-stream', identity };
    if (COMPRESSIBLE.has(extension) && identity.length > 512) {
      file.br = brotliCompressSync(identity, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } });
      file.gzip = gzipSync(identity, { level: 9 });
    }
    return file;
  }

  return {
    built: paths.has('/index.html'),
    get(urlPath: string): ConsoleFile | undefined {
      let file = loaded.get(urlPath);
      if (!file) {
        const full = paths.get(urlPath);
        if (!full) return undefined;
        file = load(full);
        loaded.set(urlPath, file);
      }
      return file;
    },
  };
}

export type ConsoleFiles = ReturnType<typeof createConsoleFiles>;

/** Encodings the client accepts with a q above zero ("br;q=0" refuses brotli). */
function acceptedEncodings(header: string | undefined): Set<string> {
  const accepted = new Set<string>();
  for (const part of (header ?? '').toLowerCase().split(',')) {
    const [name, ...parameters] = part.trim().split(';');
    const q = parameters.map((p) => p.trim()).find((p) => p.startsWith('q='));
    if (name && (q === undefined || Number(q.slice(2)) > 0)) accepted.add(name.trim());
  }
  return accepted;
}

/** The best encoding the client accepts: brotli, then gzip, else none. */
export function chooseEncoding(file: ConsoleFile, acceptEncoding: string | undefined) {
  const accepted = acceptedEncodings(acceptEncoding);
  if (file.br && accepted.has('br')) return { encoding: 'br', body: file.br };
  if (file.gzip && accepted.has('gzip')) return { encoding: 'gzip', body: file.gzip };
  return { encoding: undefined, body: file.identity };
}
