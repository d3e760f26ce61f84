import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests run the protocol package from source; the built package is what `npm start` runs.
    alias: {
      '@bulwark/protocol': fileURLToPath(new URL('./packages/protocol/src/index.ts', import.meta.url)),
    },
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/console/e2e/**/*.test.ts'],
    globalSetup: ['./packages/server/src/test-support/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Tests that run real server processes write logs and screenshots here.
    env: { BULWARK_TEST_OUTPUT: fileURLToPath(new URL('./test-output', import.meta.url)) },
  },
});
