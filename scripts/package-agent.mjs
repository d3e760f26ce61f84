#!/usr/bin/env node
// `npm run package:agent`: builds `bulwark-agent` as one executable file (Node's single-executable
// applications), so a host needs neither Node nor npm nor this repository to run the agent.
//
//   1. esbuild bundles packages/agent/src/cli.ts and everything it imports into one CommonJS file
//      (a single-executable application runs exactly one CommonJS script);
//   2. `node --experimental-sea-config` turns it into a blob;
//   3. postject injects the blob into a copy of the Node binary running this script.
//
// Nothing is downloaded: the Node binary is this one (so the executable is for this OS and CPU and
// carries this Node version), and esbuild and postject are dev dependencies already installed.
//
// Usage: node scripts/package-agent.mjs [--out DIR]   (default DIR: dist/agent, gitignored)
// Output: DIR/bulwark-agent and, next to it, the systemd unit that runs it (DIR/bulwark-agent.service);
// prints the executable's path on the last line of stdout.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const require = createRequire(import.meta.url);
const root = fileURLToPath(new URL('..', import.meta.url));
const outIndex = process.argv.indexOf('--out');
const outDir = path.resolve(outIndex === -1 ? path.join(root, 'dist', 'agent') : process.argv[outIndex + 1]);
const executable = path.join(outDir, process.platform === 'win32' ? 'bulwark-agent.exe' : 'bulwark-agent');
const bundle = path.join(outDir, 'bulwark-agent.cjs');
const blob = path.join(outDir, 'bulwark-agent.blob');
const seaConfig = path.join(outDir, 'sea-config.json');
// The unit's install steps copy it from the folder that holds the executable: both ship together.
const unit = path.join(root, 'packages/agent/bulwark-agent.service');
// The fuse Node's binary carries for postject to flip; the same string in every Node release.
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 19)) {
  process.stderr.write(`package-agent: needs Node 20.19 or later (this is ${process.version})\n`);
  process.exit(1);
}
if (process.platform === 'win32') {
  process.stderr.write('package-agent: the agent runs on Linux and macOS hosts only\n');
  process.exit(1);
}

/**
 * ws's optional native speed-ups, in a try/catch: ws uses its own JavaScript when they are missing.
 * Native addons cannot live inside the executable, so each becomes a module that fails the way a
 * missing package does. (Left external, the built-ins-only `require` of a single-executable
 * application would fail too, but print a warning on every start of the agent.)
 */
function absentOptionalModules(names) {
  const filter = new RegExp(`^(${names.join('|')})$`);
  return {
    name: 'absent-optional-modules',
    setup(b) {
      b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'absent' }));
      b.onLoad({ filter: /.*/, namespace: 'absent' }, (args) => ({
        contents: `const e = new Error(${JSON.stringify(`Cannot find module '${args.path}'`)}); e.code = 'MODULE_NOT_FOUND'; throw e;`,
        loader: 'js',
      }));
    },
  };
}

mkdirSync(outDir, { recursive: true });

const result = await build({
  entryPoints: [path.join(root, 'packages/agent/src/cli.ts')],
  outfile: bundle,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: `node${major}`,
  // The protocol package from source, as the tests use it: no `npm run build` needed first.
  alias: { '@bulwark/protocol': path.join(root, 'packages/protocol/src/index.ts') },
  plugins: [absentOptionalModules(['bufferutil', 'utf-8-validate'])],
  // The TypeScript sources begin with a shebang; a bundled CommonJS script does not need it.
  banner: { js: '// bulwark-agent, bundled by scripts/package-agent.mjs' },
  legalComments: 'inline',
  logLevel: 'warning',
  metafile: true,
});
// `import.meta` has no meaning in a CommonJS bundle: anything using it would break only when run.
const warned = result.warnings.filter((w) => /import\.meta|dynamic import|require\(/i.test(w.text));
if (warned.length > 0) {
  for (const w of warned) process.stderr.write(`package-agent: ${w.text} (${w.location?.file})\n`);
  process.exit(1);
}

writeFileSync(
  seaConfig,
  `${JSON.stringify(
    {
      main: bundle,
      output: blob,
      // The operator runs a daemon, not an experiment: no warning line on every start.
      disableExperimentalSEAWarning: true,
      useCodeCache: true,
    },
    null,
    2,
  )}\n`,
);
execFileSync(process.execPath, ['--experimental-sea-config', seaConfig], { stdio: 'pipe' });

rmSync(executable, { force: true });
copyFileSync(process.execPath, executable);
chmodSync(executable, 0o755);
if (process.platform === 'darwin') {
  // A Mach-O binary's signature covers what postject changes: drop it, re-sign ad hoc after.
  execFileSync('codesign', ['--remove-signature', executable]);
}
const { inject } = require('postject');
// postject's ELF reader warns about note sections it cannot name (".note.100"), harmlessly, for
// every Node binary; its warnings are shown only if the injection fails.
const postjectWarnings = [];
const warn = console.warn;
console.warn = (...args) => postjectWarnings.push(args.join(' '));
try {
  await inject(executable, 'NODE_SEA_BLOB', readFileSync(blob), {
    sentinelFuse: SEA_FUSE,
    ...(process.platform === 'darwin' ? { machoSegmentName: 'NODE_SEA' } : {}),
  });
} catch (error) {
  for (const line of postjectWarnings) process.stderr.write(`${line}\n`);
  throw error;
} finally {
  console.warn = warn;
}
if (process.platform === 'darwin') execFileSync('codesign', ['--sign', '-', executable]);
// Only the executable and its unit ship; the intermediate files would only confuse whoever copies
// the folder.
for (const file of [bundle, blob, seaConfig]) rmSync(file, { force: true });
copyFileSync(unit, path.join(outDir, path.basename(unit)));

const version = execFileSync(executable, ['--version'], { encoding: 'utf8' }).trim();
process.stdout.write(
  `bulwark-agent ${version} (Node ${process.version}, ${process.platform}-${process.arch})\n`,
);
process.stdout.write(`${executable}\n`);
