import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// `make bench`: the benchmarks only. Their files end in .bench.ts so that `make test`
// (test/**/*.test.ts) never starts them. They print figures and fail only when something
// broke (an error, a lost acknowledged write where none may be lost), never on time.
export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: ['bench/*.bench.ts'],
    // compiles bin/keel.js's code once (routers, agents and controllers run it), as for the integration tests
    globalSetup: ['test/support/global-setup.ts'],
    // every wait inside a bench is bounded on its own; these only catch a hang
    testTimeout: 40 * 60_000,
    hookTimeout: 5 * 60_000,
    // each bench starts its own clusters and wants the machine to itself: one file at a time
    fileParallelism: false,
    pool: 'forks',
  },
});
