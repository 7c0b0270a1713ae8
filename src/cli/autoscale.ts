import type { Command } from 'commander';
import { autoscale, autoscaleSummary, replicaAverage } from '../controller/autoscale.js';
import { defaultPlanOptions, emptyMemory, plan } from '../controller/plan.js';
import { LocalProvider } from '../providers/local.js';
import type { NodeInfo } from '../providers/types.js';
import { silentLogger } from '../util/log.js';
import { localLimits, unknownLimits } from './controller.js';
import { currentSpec } from './spec.js';
import { resolveTarget, targetHelp, type TargetOptions } from './target.js';

/**
 * The autoscaler's metric, target and decision. The active controller's own
 * answer (published in its key) when one runs; otherwise what a controller
 * would decide now, computed here and labelled so.
 */
async function status(options: TargetOptions & { json?: boolean }): Promise<void> {
  const target = resolveTarget(options);
  try {
    const [{ spec, stored }, view, controller] = await Promise.all([currentSpec(target), target.dcs.readCluster(), target.dcs.readController()]);
    let inventory: NodeInfo[];
    if (target.layout !== null) {
      const file = target.layout.readCluster();
      inventory = await new LocalProvider(target.layout, file, target.layout.readSecrets(), silentLogger(), false).list();
    } else {
      inventory = view.members.map((m) => ({ name: m.name, zone: m.zone, state: 'running', agentPid: m.agentPid, pgAddress: '', apiAddress: m.apiUrl }));
    }
    const limits = target.layout !== null ? localLimits : unknownLimits;
    const now = Date.now();
    const { health } = plan(spec, view, inventory, now, emptyMemory(), { ...defaultPlanOptions, maxNodes: limits.maxNodes });
    const policy = spec.autoscale;
    const live = controller?.value.report ?? null;
    // the active controller's own answer; worked out here only when none runs
    const answer = live?.autoscale ?? autoscaleSummary(autoscale(spec, health, view.members, now, limits.maxNodes));
    const out = {
      enabled: policy.enabled,
      metric: policy.metric,
      current: live !== null ? live.autoscale.metric : replicaAverage(health, view.members, policy.metric),
      target: policy.target,
      replicas: answer.currentReplicas,
      minReplicas: policy.minReplicas,
      maxReplicas: policy.maxReplicas,
      added: spec.scaling.added,
      decision: answer.decision,
      reason: answer.reason,
      /** controller: the active controller's own decision; computed: worked out here, no controller acts on it */
      source: live !== null ? ('controller' as const) : ('computed' as const),
      decidedAtMs: live?.atMs ?? now,
      controller: controller?.value.name ?? null,
      specStored: stored !== null,
    };
    const metric = out.current;
    if (options.json) {
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return;
    }
    const lines = [
      `autoscaling: ${policy.enabled ? 'on' : 'off'}${policy.scaleInEnabled ? '' : ' (scale-in disabled)'}`,
      `metric:      ${policy.metric} = ${metric === null ? 'no data' : metric.toFixed(1)} (target ${policy.target}, average over streaming replicas)`,
      `replicas:    ${out.replicas} (min ${policy.minReplicas}, max ${policy.maxReplicas}); added by the autoscaler: ${out.added.join(', ') || 'none'}`,
      `cooldowns:   scale-out ${policy.scaleOutCooldownSeconds} s, scale-in ${policy.scaleInCooldownSeconds} s`,
      `decision:    ${out.decision}${live !== null ? ` (the active controller's, ${Math.max(0, Math.round((now - live.atMs) / 1000))} s ago)` : ' (computed here)'}`,
      `why:         ${out.reason}`,
      `controller:  ${out.controller ?? 'none active: nothing acts on this decision'}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await target.dcs.close();
  }
}

export function registerAutoscale(program: Command): void {
  const cmd = program.command('autoscale').description('the replica autoscaler');
  cmd
    .command('status')
    .description('current metric, target, and the decision the autoscaler would take now, with its reason')
    .option('--dir <dir>', targetHelp.dir)
    .option('--etcd <url>', targetHelp.etcd)
    .option('--cluster <name>', targetHelp.cluster)
    .option('--etcd-cacert <file>', targetHelp.etcdCacert)
    .option('--etcd-cert <file>', targetHelp.etcdCert)
    .option('--etcd-key <file>', targetHelp.etcdKey)
    .option('--json', 'as JSON')
    .action(status);
}
