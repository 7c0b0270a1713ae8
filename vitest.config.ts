import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // integration tests start real etcd and PostgreSQL servers: one file at a time
    fileParallelism: false,
    pool: 'forks',
  },
});
