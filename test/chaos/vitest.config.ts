import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// `make chaos` / `make chaos-ci`: the fault-injection suite only. Its files end in
// .chaos.ts so that `make test` (test/**/*.test.ts) never starts it.
export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/chaos/**/*.chaos.ts'],
    // compiles bin/keel.js's code once, as for the integration tests
    globalSetup: ['test/support/global-setup.ts'],
    // the suite bounds every wait itself; these only catch a hang
    testTimeout: 45 * 60_000,
    hookTimeout: 5 * 60_000,
    fileParallelism: false,
    pool: 'forks',
  },
});
