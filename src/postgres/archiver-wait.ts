/**
 * A postmaster that waits only for its archiver. After the shutdown
 * checkpoint of a fast shutdown, PostgreSQL asks its archiver to push what is
 * left and waits for it; an archive_command that hangs (pgBackRest's
 * asynchronous push waits up to archive-timeout, 60 s, for a push that never
 * started) keeps the postmaster up as long, and with it whatever waits for
 * the stop: a restart asked through the API, an agent stopping (its lease,
 * and so the failover, after it). None of them needs the wait: no WAL can
 * follow the shutdown checkpoint; the segments left `.ready` are pushed by
 * this node's archiver at its next start as primary, or, when another node
 * leads by then, by the new leader, which archives the complete segments of
 * the old timeline that the old leader had not (backup/archive-gap.ts) and
 * the last one as `.partial`. Past a grace, the rest of the shutdown is made
 * immediate: pg_control says "shut down" already, so the next start runs no
 * recovery.
 */
import type { Logger } from '../util/log.js';
import { signalShutdown } from './datadir.js';
import { childrenOf, processTitle } from './postmaster.js';

/** "archiver" or "logger" from a process title, with or without cluster_name before it (which may start with either word), else null. */
const roleOf = (title: string): string | null => /^postgres: (?:.*: )?(archiver|logger)(?: |$)/.exec(title)?.[1] ?? null;

/** The titles of a postmaster's children that leave it waiting only for its archiver: the archiver, and at most a logger besides. Pure. */
export function waitsOnlyForArchiver(childTitles: readonly string[]): boolean {
  return childTitles.some((title) => roleOf(title) === 'archiver') && childTitles.every((title) => roleOf(title) !== null);
}

export class ArchiverWait {
  private since: number | null = null;

  constructor(
    private readonly postmasterPid: number,
    private readonly graceMs: number,
    private readonly logger: Logger,
  ) {}

  /**
   * Called while the postmaster lives after its shutdown checkpoint: once it has waited on its
   * archiver alone for graceMs, an immediate shutdown (PostgreSQL sends SIGQUIT to the archiver's
   * process group: the archive_command's shell and program go with it).
   */
  endOnceOverdue(): void {
    const titles = childrenOf(this.postmasterPid).map((pid) => processTitle(pid) ?? '');
    if (!waitsOnlyForArchiver(titles)) {
      this.since = null;
      return;
    }
    this.since ??= Date.now();
    if (Date.now() - this.since < this.graceMs) return;
    signalShutdown(this.postmasterPid, 'immediate');
    const archiver = titles.find((title) => roleOf(title) === 'archiver');
    this.logger.warn({ pid: this.postmasterPid, archiver, graceMs: this.graceMs }, 'past its shutdown checkpoint the postmaster waited only for its archiver: ended');
  }
}
