/** Ends what a test's LocalPostgres started, whatever state the test left it in. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LocalPostgres } from '../../src/postgres/local.js';
import type { StopMode } from '../../src/postgres/types.js';

export async function stopLocalPostgres(node: LocalPostgres | undefined, mode: StopMode = 'fast'): Promise<void> {
  if (!node) return;
  await node.stop(mode).catch(() => undefined);
  await node.close();
  // Last resort, by PID only: a postmaster that outlived the stop.
  try {
    const pid = Number(readFileSync(join(node.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0) process.kill(pid, 'SIGKILL');
  } catch {
    // no pid file or no such process: already gone
  }
}
