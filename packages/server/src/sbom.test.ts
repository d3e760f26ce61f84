import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * `npm run sbom`: the software bill of materials as CycloneDX JSON, from npm's own `npm sbom` (no
 * extra tool; nothing fetched, it reads the installed tree). It lists every package npm installed for
 * the repository, the workspaces' dependencies included; build and test tools are marked as such.
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

interface Component {
  name: string;
  version: string;
  purl: string;
  properties?: Array<{ name: string; value: string }>;
}

const DEVELOPMENT = { name: 'cdx:npm:package:development', value: 'true' };

describe('npm run sbom', () => {
  it('writes sbom.cdx.json: CycloneDX listing every installed package with its version', async () => {
    const child = spawn('npm', ['run', '--silent', '--offline', 'sbom'], {
      cwd: ROOT,
      env: { ...process.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const [code] = (await once(child, 'close')) as [number | null];
    expect(code, stderr).toBe(0);

    const sbom = JSON.parse(readFileSync(`${ROOT}sbom.cdx.json`, 'utf8')) as {
      bomFormat: string;
      specVersion: string;
      metadata: { component: { purl: string } };
      components: Component[];
    };
    expect(sbom.bomFormat).toBe('CycloneDX');
    expect(sbom.specVersion).toMatch(/^1\.\d+$/);
    expect(sbom.metadata.component.purl).toMatch(/^pkg:npm\/bulwark@/);
    const listed = new Set(sbom.components.map((component) => `${component.name}@${component.version}`));
    const byName = new Map(sbom.components.map((component) => [component.name, component]));

    // The dependencies of the workspaces (the server's here) with the versions the lockfile installed.
    const lock = JSON.parse(readFileSync(`${ROOT}package-lock.json`, 'utf8')) as {
      packages: Record<string, { version?: string; link?: boolean }>;
    };
    for (const name of ['fastify', 'kysely', 'better-sqlite3', 'pg', 'ws', 'zod']) {
      const version = lock.packages[`node_modules/${name}`]?.version;
      expect(byName.get(name), name).toMatchObject({ version, purl: `pkg:npm/${name}@${version}` });
      expect(byName.get(name)?.properties, name).not.toContainEqual(DEVELOPMENT);
    }
    // Nothing installed is left out.
    const installed = Object.entries(lock.packages).filter(
      ([key, entry]) => key.startsWith('node_modules/') && !entry.link && existsSync(`${ROOT}${key}`),
    );
    expect(installed.length).toBeGreaterThan(100);
    for (const [key, entry] of installed) {
      const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
      expect(listed.has(`${name}@${entry.version}`), key).toBe(true);
    }
    // Tools that only build or test are listed, and marked.
    expect(byName.get('vitest')?.properties).toContainEqual(DEVELOPMENT);
  });
});
