/**
 * The local provider shares its directory with other processes (`keel up`'s
 * supervisor, `keel controller`): a node that another process destroyed and
 * created again under the same name is still stopped by this one, by its new
 * PIDs, and never left running.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalProvider } from '../../src/providers/local.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { isAlive, readPidFile } from '../../src/util/process.js';
import { TestCluster } from '../support/cluster.js';

describe('local provider beside another process on the same directory', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await TestCluster.start({ portBase: 19600, nodes: 2 });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('stops a node that another process destroyed and created again', async () => {
    const { layout } = cluster;
    const before = readPidFile(layout.agentPidFile('node2'));
    // a second provider on the same directory, as `keel controller` runs one
    const other = new LocalProvider(layout, cluster.file, layout.readSecrets(), silentLogger(), false);
    await other.destroy('node2');
    await other.create(cluster.file.cluster, { name: 'node2', zone: 'local-b' });
    // the pid file is written beside the start
    for (let i = 0; i < 50 && readPidFile(layout.agentPidFile('node2')) === null; i++) await sleep(100);
    const after = readPidFile(layout.agentPidFile('node2'));
    expect(after).not.toBeNull();
    expect(after).not.toBe(before);
    for (let i = 0; i < 100 && readPidFile(`${layout.dataDir('node2')}/postmaster.pid`) === null; i++) await sleep(100);
    const postmaster = readPidFile(`${layout.dataDir('node2')}/postmaster.pid`)!;
    const guard = readPidFile(layout.guardPidFile('node2'))!;

    // the supervisor's provider still knows node2 by the PIDs it started, long gone
    expect((await cluster.local.provider.list()).find((n) => n.name === 'node2')).toMatchObject({ state: 'running', agentPid: after });
    await cluster.local.provider.stop('node2');
    for (let i = 0; i < 50 && [after!, postmaster, guard].some(isAlive); i++) await sleep(100);
    expect([after, postmaster, guard].map((pid) => isAlive(pid!))).toEqual([false, false, false]);
  });
});
