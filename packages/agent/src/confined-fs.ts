import { constants } from 'node:fs';
import { open, readdir, realpath } from 'node:fs/promises';
import path from 'node:path';
import { isInside } from './config.js';

/**
 * File helpers confined to declared roots (EXEC-3), for the handlers of SDK actions: a path that
 * names anything outside the roots is refused, whether by `..` (refused outright, wherever it
 * appears), by an absolute path elsewhere, or by a symbolic link (the real path, after every link,
 * must be inside the real path of a root). Relative paths are relative to the first root. The final
 * component is opened with O_NOFOLLOW, so a link swapped in after the check is not followed; a
 * directory above it swapped for a link by someone who can write inside the root is not covered.
 */

export class ConfinedPathError extends Error {}

export interface ConfinedFs {
  /** The real, absolute path of an existing file or directory inside the roots. */
  resolve(target: string): Promise<string>;
  readFile(target: string): Promise<Buffer>;
  /** Creates or replaces a regular file (mode 0600 when created); its directory must exist. */
  writeFile(target: string, data: string | Uint8Array): Promise<void>;
  /** Entry names of a directory. */
  list(target: string): Promise<string[]>;
}

export function createConfinedFs(roots: string[]): ConfinedFs {
  if (roots.length === 0) throw new ConfinedPathError('no roots: nothing is reachable');
  const absoluteRoots = roots.map((root) => path.resolve(root));
  let realRoots: Promise<string[]> | undefined;
  const real = () => {
    realRoots ??= Promise.all(absoluteRoots.map((root) => realpath(root).catch(() => '')));
    return realRoots.then((list) => list.filter((root) => root !== ''));
  };

  /** The lexical absolute path, refused when it names `..` or leaves the roots. */
  const lexical = (target: string): string => {
    if (target.includes('\0')) throw new ConfinedPathError('the path contains a NUL byte');
    if (target.split(/[\\/]/).includes('..')) throw new ConfinedPathError(`${target}: ".." is not allowed`);
    const absolute = path.resolve(absoluteRoots[0]!, target);
    if (!absoluteRoots.some((root) => isInside(root, absolute))) {
      throw new ConfinedPathError(`${target} is outside the allowed roots`);
    }
    return absolute;
  };

  const confine = async (absolute: string, shown: string): Promise<string> => {
    let resolved: string;
    try {
      resolved = await realpath(absolute);
    } catch (error) {
      throw new ConfinedPathError(`${shown}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    if (!(await real()).some((root) => isInside(root, resolved))) {
      throw new ConfinedPathError(`${shown} leads outside the allowed roots`);
    }
    return resolved;
  };

  const resolve = (target: string) => confine(lexical(target), target);

  return {
    resolve,
    async readFile(target) {
      const resolved = await resolve(target);
      const handle = await open(resolved, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        return await handle.readFile();
      } finally {
        await handle.close();
      }
    },
    async writeFile(target, data) {
      const absolute = lexical(target);
      const dir = await confine(path.dirname(absolute), path.dirname(target));
      const file = path.join(dir, path.basename(absolute));
      let handle: Awaited<ReturnType<typeof open>>;
      try {
        handle = await open(
          file,
          constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
          0o600,
        );
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ELOOP') throw new ConfinedPathError(`${target} is a symbolic link; not written`);
        throw new ConfinedPathError(`${target}: ${code ?? 'error'}`);
      }
      try {
        if (!(await handle.stat()).isFile()) throw new ConfinedPathError(`${target} is not a regular file`);
        await handle.writeFile(data);
      } finally {
        await handle.close();
      }
    },
    async list(target) {
      return readdir(await resolve(target));
    },
  };
}
