/**
 * `keel certs show|rotate`: the certificates of a local cluster, when each
 * expires, and new ones rolled in without a restart. Rotation keeps the CA:
 * every holder already trusts it, so a new leaf is accepted the moment it is
 * in use, and one not yet picked up (an open connection) stays valid until it
 * expires.
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadNodeConfig } from '../config/load.js';
import { KeelError } from '../errors.js';
import { verifiedPostmasterPid } from '../postgres/postmaster.js';
import { resolveRunAs } from '../postgres/programs.js';
import { LocalLayout, type LeafCertificate } from '../providers/local-layout.js';
import { issueCertificate, readCertificate } from '../tls/pki.js';
import { commandLine, readPidFile } from '../util/process.js';
import { defaultDir } from './target.js';
import { table } from './table.js';

export interface CertificateRow {
  what: string;
  file: string;
  commonName: string;
  names: string[];
  expires: string;
  daysLeft: number;
}

/** Every leaf of the cluster in DIR: its own and each node's, with node.yml's replication role and key owner. */
function leaves(layout: LocalLayout): LeafCertificate[] {
  const cluster = layout.readCluster();
  const nodes = layout.nodeNames().flatMap((name) => {
    const config = loadNodeConfig(layout.nodeConfigFile(name));
    return layout.nodeCertificates(cluster, name, config.postgres.replication.username, resolveRunAs(config));
  });
  return [...layout.clusterCertificates(cluster), ...nodes];
}

/** The CA and every leaf of the local cluster, soonest expiry first. */
export function certificateRows(layout: LocalLayout): CertificateRow[] {
  const files = [{ what: 'cluster CA', file: layout.caFiles.cert }, ...leaves(layout).map((leaf) => ({ what: leaf.what, file: leaf.pair.cert }))];
  return files
    .filter((entry) => existsSync(entry.file))
    .map((entry) => {
      const info = readCertificate(entry.file);
      return { what: entry.what, file: entry.file, commonName: info.commonName, names: info.names, expires: info.notAfter.toISOString(), daysLeft: info.daysLeft };
    })
    .sort((a, b) => a.daysLeft - b.daysLeft);
}

/** SIGHUP to a process when its command line carries `mark`; whether it was sent. */
function hangUp(pid: number | null, mark: string): boolean {
  if (pid === null || !(commandLine(pid)?.join(' ').includes(mark) ?? false)) return false;
  process.kill(pid, 'SIGHUP');
  return true;
}

export interface RotationResult {
  reissued: number;
  agentsReloaded: string[];
  postgresReloaded: string[];
  othersReloaded: string[];
}

/**
 * New keys and certificates for every leaf, then the holders reload by SIGHUP: each agent (its API and
 * its etcd client), each PostgreSQL (which reads its certificate again on reload), the router and the
 * controller (their etcd clients); etcd reads its own files on every new handshake. Nothing restarts and
 * no connection is closed.
 */
export async function rotateCertificates(layout: LocalLayout): Promise<RotationResult> {
  if (!existsSync(layout.caFiles.key)) {
    throw new KeelError('KEEL_TLS_FAILED', `no CA key at ${layout.caFiles.key}: certificates of a brought CA are rotated by their owner`, {
      hint: 'issue new certificates with your CA, put them in place and send SIGHUP to the agents',
    });
  }
  const all = leaves(layout);
  for (const leaf of all) await issueCertificate(layout.caFiles, leaf.pair, leaf.request);
  const result: RotationResult = { reissued: all.length, agentsReloaded: [], postgresReloaded: [], othersReloaded: [] };
  // the router and the controller read their etcd client pair again
  if (hangUp(readPidFile(layout.routerPidFile), 'router')) result.othersReloaded.push('router');
  if (hangUp(readPidFile(layout.controllerPidFile), 'controller')) result.othersReloaded.push('controller');
  if (hangUp(readPidFile(layout.dashboardPidFile), 'dashboard')) result.othersReloaded.push('dashboard');
  for (const name of layout.nodeNames()) {
    if (hangUp(readPidFile(layout.agentPidFile(name)), layout.nodeConfigFile(name))) result.agentsReloaded.push(name);
    const postmaster = verifiedPostmasterPid(layout.dataDir(name));
    if (postmaster !== null) {
      process.kill(postmaster, 'SIGHUP');
      result.postgresReloaded.push(name);
    }
  }
  return result;
}

export function registerCerts(program: Command): void {
  const certs = program.command('certs').description("the local cluster's TLS certificates: expiry, rotation");
  certs
    .command('show')
    .description('every certificate of the cluster with its names and expiry, soonest first')
    .option('--dir <dir>', 'directory of a local cluster started by `keel up`', defaultDir)
    .option('--json', 'machine-readable output')
    .action((options: { dir: string; json?: boolean }) => {
      const rows = certificateRows(new LocalLayout(options.dir));
      if (options.json) {
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      process.stdout.write(table(['certificate', 'CN', 'names', 'expires', 'days left'], rows.map((r) => [r.what, r.commonName, r.names.join(' '), r.expires, String(r.daysLeft)])));
    });
  certs
    .command('rotate')
    .description('new keys and certificates from the cluster CA for every holder, reloaded in place (no restart)')
    .option('--dir <dir>', 'directory of a local cluster started by `keel up`', defaultDir)
    .action(async (options: { dir: string }) => {
      const layout = new LocalLayout(options.dir);
      const result = await rotateCertificates(layout);
      process.stdout.write(
        `reissued ${result.reissued} certificates from ${join(layout.tlsDir, 'ca.crt')}; ` +
          `reloaded agents: ${result.agentsReloaded.join(', ') || '(none running)'}; PostgreSQL: ${result.postgresReloaded.join(', ') || '(none running)'}; ` +
          `also: ${result.othersReloaded.join(', ') || '(no router or controller running)'}\n`,
      );
    });
}
