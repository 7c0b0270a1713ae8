/**
 * The local cluster the demo runs against: the one already running in the
 * directory, or a new one started with `keel up --detach` (so it outlives the
 * demo with --keep, and `keel down` stops it like any other). Everything that
 * would make `keel up` refuse is checked first, so bad input gets its own
 * KEEL_* error before anything starts.
 */
import { spawn } from 'node:child_process';
import { KeelError } from '../errors.js';
import { checkPostgresBinaries } from '../postgres/binaries.js';
import { LocalCluster } from '../supervisor/local-cluster.js';
import { connectionStrings, LocalLayout, type ClusterFile, placeholderSecrets } from '../providers/local-layout.js';
import { keelBin } from '../providers/local.js';
import { silentLogger } from '../util/log.js';
import { isAlive, readPidFile } from '../util/process.js';
import type { Endpoint } from '../workload/connect.js';

export interface LocalTarget {
  layout: LocalLayout;
  file: ClusterFile;
  rw: Endpoint;
  ro: Endpoint;
  /** the demo started it, so the demo stops it (unless --keep) */
  startedByDemo: boolean;
}

export interface StartOptions {
  dir: string;
  portBase?: number;
  nodes?: number;
  sync: boolean;
  timeoutSeconds: number;
}


function target(layout: LocalLayout, file: ClusterFile, startedByDemo: boolean): LocalTarget {
  const urls = connectionStrings(layout, file);
  const password = layout.readSecrets().app;
  return { layout, file, startedByDemo, rw: { connectionString: urls.rw, password }, ro: { connectionString: urls.ro, password } };
}

/** Whether a supervisor (`keel up`) runs the cluster in this directory. */
export function isRunning(layout: LocalLayout): boolean {
  const pid = readPidFile(layout.supervisorPidFile);
  return pid !== null && isAlive(pid);
}

export async function ensureLocalCluster(options: StartOptions, say: (text: string) => void, tick: (text: string) => void): Promise<LocalTarget> {
  const layout = new LocalLayout(options.dir);
  const stored = layout.exists() ? layout.readCluster() : null;
  if (stored !== null && options.portBase !== undefined && options.portBase !== stored.portBase) {
    throw new KeelError('KEEL_USAGE', `${layout.dir} holds a cluster on port base ${stored.portBase}, not ${options.portBase}`, {
      hint: 'leave out --port-base to use that cluster, or give another --dir for a new one',
    });
  }
  if (stored !== null && options.sync && stored.synchronousMode === 'off') {
    say(`note: the cluster in ${layout.dir} was made with asynchronous replication, so a failover can lose the last acknowledged writes (synchronous replication applies to new clusters)`);
  }
  if (stored !== null && isRunning(layout)) {
    const local = new LocalCluster(layout, stored, layout.readSecrets(), silentLogger());
    say(`using the cluster already running in ${layout.dir} (${stored.nodes} nodes, port base ${stored.portBase})`);
    await local.waitReady(options.timeoutSeconds * 1000);
    return target(layout, stored, false);
  }

  const file: ClusterFile = stored ?? {
    v: 1,
    cluster: 'keel',
    nodes: options.nodes ?? 3,
    portBase: options.portBase ?? 6400,
    synchronousMode: options.sync ? 'on' : 'off',
  };
  checkPostgresBinaries('/usr/lib/postgresql/15/bin');
  // the same check `keel up` makes, before anything is written or started
  await new LocalCluster(layout, file, placeholderSecrets, silentLogger()).checkPorts();

  const args = ['up', '--dir', layout.dir, '--detach', '--timeout', String(options.timeoutSeconds)];
  if (stored === null) args.push('--port-base', String(file.portBase), '--nodes', String(file.nodes));
  if (stored === null && !options.sync) args.push('--async');
  say(`starting a ${file.nodes}-node cluster in ${layout.dir} (keel up --detach, ports ${file.portBase}-${file.portBase + 99}${file.synchronousMode === 'off' ? '' : ', synchronous replication'})`);
  const started = Date.now();
  const timer = setInterval(() => tick(`  waiting for etcd, the router and ${file.nodes} nodes: ${Math.round((Date.now() - started) / 1000)} s`), 500);
  try {
    await runKeel(args, 'keel up');
  } catch (err) {
    // a start that failed half-way must not leave a supervisor behind
    if (layout.exists()) await stopLocalCluster(layout).catch(() => undefined);
    throw err;
  } finally {
    clearInterval(timer);
    // clears the ticking line on a terminal
    tick('');
  }
  say(`  ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return target(layout, layout.readCluster(), true);
}

/** `keel down` on the directory: the router, replicas, the leader, etcd; the data stays. */
export async function stopLocalCluster(layout: LocalLayout): Promise<void> {
  await runKeel(['down', '--dir', layout.dir], 'keel down');
}

/**
 * Runs a keel command to its end; fails with its own error text. In its own
 * process group: a Ctrl-C meant for the demo must not cut a start or a stop in
 * half (the demo stops what was started once the command is done).
 */
function runKeel(args: string[], what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [keelBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stderr = '';
    child.stdout.resume();
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) return resolve();
      const message = stderr.trim().split('\n').slice(-6).join('\n  ');
      reject(new KeelError('KEEL_DEMO_CLUSTER_FAILED', `${what} failed (exit ${code}): ${message}`));
    });
  });
}
