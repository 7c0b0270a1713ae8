/** The key-value port's contract against a real etcd started here (test/support/kv-contract.ts); over TLS with etcd's auth it runs in security-etcd.test.ts. */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { EtcdKv } from '../../src/dcs/kv-etcd.js';
import { startEtcd, stopEtcd, type RunningEtcd } from '../../src/dcs/etcd-server.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { findFreePorts } from '../../src/util/ports.js';
import { kvContract } from '../support/kv-contract.js';

const dir = mkdtempSync('/tmp/keel-kv-etcd-');
let etcd: RunningEtcd | null = null;
let kv: EtcdKv | null = null;
let seq = 0;

beforeAll(async () => {
  const [clientPort, peerPort] = (await findFreePorts('127.0.0.1', 19400, 2)) as [number, number];
  etcd = await startEtcd({ name: 'kv', dataDir: join(dir, 'data'), clientPort, peerPort, logFile: join(dir, 'etcd.log') });
  kv = new EtcdKv({ endpoints: [etcd.endpoint], requestTimeoutMs: 3000, logger: silentLogger() });
});

afterAll(async () => {
  await kv?.close();
  if (etcd !== null) await stopEtcd(etcd.pid, 10_000);
  rmSync(dir, { recursive: true, force: true });
});

kvContract('etcd', () => ({
  kv: kv!,
  passTime: (ms) => sleep(ms),
  prefix: () => `/contract/${process.pid}/${++seq}/`,
}));
