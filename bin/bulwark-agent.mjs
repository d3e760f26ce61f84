#!/usr/bin/env node
// `npx bulwark-agent …` at the repository root (the root package's bin): the built `bulwark-agent` CLI
// of packages/agent. Before `npm run build` there is nothing to run; say so instead of a stack trace.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const built = new URL('../packages/agent/dist/cli.js', import.meta.url);

if (!existsSync(fileURLToPath(built))) {
  process.stderr.write(
    `bulwark-agent: not built yet (${fileURLToPath(built)} is missing); run: npm run build\n`,
  );
  process.exit(1);
}
await import(built.href);
