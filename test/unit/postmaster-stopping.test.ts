/** The status line of postmaster.pid, as PostgreSQL 15 writes it, tells a shutting-down postmaster. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { postmasterStopping } from '../../src/postgres/datadir.js';

/** postmaster.pid of PostgreSQL 15: PID, data directory, start time, port, socket directory, listen address, shared memory key, status (padded) */
const pidFile = (status: string): string => ['4242', '/var/lib/keel/data', '1796455514', '5432', '/run/keel', '*', '   123456     65538', status.padEnd(8), ''].join('\n');

describe('postmasterStopping', () => {
  let dir = '';
  afterEach(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  const dataDirWith = (content: string | null): string => {
    dir = mkdtempSync(join(tmpdir(), 'keel-pmstatus-'));
    if (content !== null) writeFileSync(join(dir, 'postmaster.pid'), content);
    return dir;
  };

  it('says yes once the status line reads "stopping"', async () => {
    expect(await postmasterStopping(dataDirWith(pidFile('stopping')))).toBe(true);
  });

  it.each(['ready', 'standby', 'starting'])('says no for "%s"', async (status) => {
    expect(await postmasterStopping(dataDirWith(pidFile(status)))).toBe(false);
  });

  it('says no without postmaster.pid, or with one written only in part (the postmaster is still starting)', async () => {
    expect(await postmasterStopping(dataDirWith(null))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
    expect(await postmasterStopping(dataDirWith('4242\n/var/lib/keel/data\n'))).toBe(false);
  });
});
