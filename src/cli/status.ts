import type { Command } from 'commander';
import { lagBytes } from '../model/lsn.js';
import { defaultDynamicConfig } from '../config/schema.js';
import type { ClusterView, MemberArchive, MemberValue } from '../model/values.js';
import { archiveSummary } from '../backup/archive-status.js';
import { KeelError } from '../errors.js';
import { connectionStrings, dashboardUrl } from '../providers/local-layout.js';
import { certificateRows } from './certs.js';
import { localRouterSummary, routerLine } from './status-router.js';
import { resolveTarget, targetHelp, type TargetOptions } from './target.js';
import { table } from './table.js';

export interface MemberRow {
  name: string;
  address: string;
  role: string;
  state: string;
  timeline: number | null;
  lagBytes: number | null;
  sync: boolean;
  /** the controller is draining it before removing it: no new reads */
  draining: boolean;
  leader: boolean;
  reason: string;
  zone: string;
  apiUrl: string;
  dataDir: string;
  agentPid: number | null;
  postmasterPid: number | null;
  /** WAL archiving, on the primary of a cluster with a backup repository */
  archive: MemberArchive | null;
}

/** Lag of each replica behind the leader's last published WAL position. */
export function memberRows(view: ClusterView): MemberRow[] {
  const leaderName = view.leader?.value.name ?? null;
  const leader = view.members.find((m) => m.name === leaderName);
  const leaderLsn = leader?.walLsn ?? view.status?.value.walLsn ?? null;
  const syncSet = new Set(view.sync?.value.members ?? []);
  const draining = new Set(view.draining.map((d) => d.name));
  return [...view.members]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((m: MemberValue) => ({
      name: m.name,
      address: `${m.pgHost}:${m.pgPort}`,
      role: m.name === leaderName ? 'leader' : m.role,
      state: m.state,
      timeline: m.timeline,
      lagBytes: m.role === 'replica' && leaderLsn !== null ? lagBytes(leaderLsn, m) : m.name === leaderName ? 0 : null,
      sync: syncSet.has(m.name),
      draining: draining.has(m.name),
      leader: m.name === leaderName,
      reason: m.reason,
      zone: m.zone,
      apiUrl: m.apiUrl,
      dataDir: m.dataDir,
      agentPid: m.agentPid,
      postmasterPid: m.postmasterPid,
      archive: m.archive ?? null,
    }));
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('members with role, state, timeline, lag and the reason of their last decision')
    .option('--dir <dir>', targetHelp.dir)
    .option('--etcd <url>', targetHelp.etcd)
    .option('--cluster <name>', targetHelp.cluster)
    .option('--etcd-cacert <file>', targetHelp.etcdCacert)
    .option('--etcd-cert <file>', targetHelp.etcdCert)
    .option('--etcd-key <file>', targetHelp.etcdKey)
    .option('--json', 'machine-readable output')
    .action(async (options: TargetOptions & { json?: boolean }) => {
      const target = resolveTarget(options);
      let view: ClusterView;
      try {
        view = await target.dcs.readCluster();
      } finally {
        await target.dcs.close();
      }
      const rows = memberRows(view);
      const leader = view.leader?.value.name ?? null;
      const certificates = target.layout?.exists() ? certificateRows(target.layout) : [];
      const soonest = certificates[0] ?? null;
      // the page `keel up` serves (keel dashboard --dir); another cluster's dashboard is wherever its operator runs it
      const dashboard = target.layout?.exists() ? dashboardUrl(target.layout.readCluster()) : null;
      // which engine serves rw and ro: only a local cluster's router is known by address
      const router = target.layout?.exists() ? await localRouterSummary(target.layout, target.layout.readCluster()) : null;
      if (options.json) {
        const local = target.layout?.exists() ? connectionStrings(target.layout, target.layout.readCluster()) : null;
        const out = {
          cluster: target.cluster,
          leader,
          timeline: rows.find((r) => r.leader)?.timeline ?? null,
          synchronousMode: view.config?.value.synchronous_mode ?? defaultDynamicConfig.synchronous_mode,
          members: rows,
          connection: local ? { rw: local.rw, ro: local.ro, pooled: local.pooled, nodes: local.nodes, passfile: target.layout!.pgpassFile, sslrootcert: target.layout!.caFiles.cert } : null,
          dashboard,
          router,
          certificates: soonest === null ? null : { soonest: { what: soonest.what, expires: soonest.expires, daysLeft: soonest.daysLeft }, count: certificates.length },
        };
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      } else {
        process.stdout.write(`cluster ${target.cluster}, leader ${leader ?? '(none)'}\n`);
        if (soonest !== null) process.stdout.write(`TLS on; first certificate to expire: ${soonest.what}, in ${soonest.daysLeft} days (keel certs show)\n`);
        if (dashboard !== null) process.stdout.write(`dashboard ${dashboard}\n`);
        if (router !== null) process.stdout.write(`${routerLine(router)}\n`);
        if (target.layout?.exists()) process.stdout.write(`pooled rw ${connectionStrings(target.layout, target.layout.readCluster()).pooled}\n`);
        process.stdout.write(
          table(
            ['member', 'address', 'role', 'state', 'tl', 'lag bytes', 'sync', 'archive', 'reason'],
            rows.map((r) => [r.name, r.address, r.role, r.state, String(r.timeline ?? ''), r.lagBytes === null ? '' : String(r.lagBytes), r.sync ? 'yes' : '', archiveSummary(r.archive ?? undefined), r.draining ? `draining; ${r.reason}` : r.reason]),
          ),
        );
      }
      if (leader === null) {
        process.stderr.write(`${new KeelError('KEEL_NO_LEADER', `cluster ${target.cluster} has no leader`).render()}\n`);
        process.exitCode = 1;
      }
    });
}
