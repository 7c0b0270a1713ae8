/**
 * One backup at a time in a cluster: the `backup` key, taken with a
 * create-if-absent transaction on a lease of the runner's own, renewed beside
 * the backup. When the lease cannot be trusted any more (etcd gone, the lease
 * expired) the backup is stopped: another runner may take the key then.
 */
import type { Dcs } from '../dcs/types.js';
import { LeaseKeeper } from '../dcs/lease-keeper.js';
import { leaseMarginMs } from '../model/lease.js';
import type { BackupLockValue } from '../model/values.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';

const lockTtlSeconds = 10;
const checkEveryMs = 500;

export interface HeldBackupLock {
  value: BackupLockValue;
  /** aborted once the lease behind the key can no longer be trusted */
  signal: AbortSignal;
  release(): Promise<void>;
}

/** The key, or null with who holds it when another backup runs. */
export async function claimBackupLock(
  dcs: Dcs,
  value: BackupLockValue,
  clock: Clock,
  logger: Logger,
): Promise<{ held: HeldBackupLock } | { held: null; holder: BackupLockValue | null }> {
  const lost = new AbortController();
  const keeper = new LeaseKeeper({ dcs, clock, logger, marginMs: (ttl) => leaseMarginMs(ttl, checkEveryMs), onLost: () => lost.abort() });
  await keeper.grant(lockTtlSeconds);
  let claimed = false;
  try {
    claimed = (await keeper.withLease((id) => dcs.claimBackup(value, id))) === true;
  } finally {
    if (!claimed) await keeper.revoke().catch(() => undefined);
  }
  if (!claimed) return { held: null, holder: (await dcs.readBackup().catch(() => null))?.value ?? null };
  const watch = setInterval(() => {
    if (!keeper.trusted()) lost.abort();
  }, checkEveryMs);
  return {
    held: {
      value,
      signal: lost.signal,
      release: async () => {
        clearInterval(watch);
        await dcs.releaseBackup(value).catch(() => false);
        await keeper.revoke().catch(() => undefined);
      },
    },
  };
}
