/**
 * The controller's /metrics: nodes per zone as its last plan saw them, what
 * it did (creations, replacements, fencings, scaling), and the autoscaler's
 * metric against its target. Read at scrape time from the controllers this
 * process runs (counts.ts); a standby shows only its counters and
 * keel_controller_active 0.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from '../util/metrics.js';
import type { NodeHealth } from './plan.js';
import { runningControllers, type ControllerCounts, type MeasuredController } from './counts.js';

/** How the last plan judged a node, as a label value. */
export function nodeHealthLabel(node: NodeHealth): 'leader' | 'streaming' | 'down' | 'starting' {
  if (node.down) return 'down';
  if (node.leader) return 'leader';
  return node.streaming ? 'streaming' : 'starting';
}

/** `cluster` labels every metric when known (a controller given only --aws-config learns it later). */
export function buildControllerRegistry(cluster: string | null, controllers: () => Iterable<MeasuredController> = () => runningControllers): Registry {
  const registry = new Registry();
  if (cluster !== null) registry.setDefaultLabels({ cluster });
  collectProcessMetrics(registry);
  const registers = [registry];
  const all = () => [...controllers()];
  // the one that acts; a standby's plan is not the cluster's
  const acting = () => all().find((c) => c.active) ?? null;

  new Gauge({
    name: 'keel_controller_active',
    help: '1 while this process holds the controller key and acts',
    registers,
    collect() {
      this.set(acting() === null ? 0 : 1);
    },
  });
  new Gauge({
    name: 'keel_controller_nodes',
    help: 'nodes by zone and by how the last plan judged them (leader, streaming, starting, down)',
    labelNames: ['zone', 'health'],
    registers,
    collect() {
      this.reset();
      const counts = new Map<string, { zone: string; health: string; n: number }>();
      for (const node of acting()?.lastPlan?.health ?? []) {
        const health = nodeHealthLabel(node);
        const key = `${node.zone}|${health}`;
        const entry = counts.get(key) ?? { zone: node.zone, health, n: 0 };
        entry.n += 1;
        counts.set(key, entry);
      }
      for (const { zone, health, n } of counts.values()) this.set({ zone, health }, n);
    },
  });
  new Gauge({
    name: 'keel_controller_declared_nodes',
    help: "nodes the spec declares, the autoscaler's included (NaN before the first plan)",
    registers,
    collect() {
      const spec = acting()?.lastSpec ?? null;
      this.set(spec === null ? Number.NaN : spec.nodes + spec.scaling.added.length);
    },
  });

  const counter = (name: string, help: string, key: keyof ControllerCounts) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(all().reduce((sum, c) => sum + c.counts[key], 0));
      },
    });
  counter('keel_controller_creations_total', 'nodes the provider created', 'creations');
  counter('keel_controller_replacements_total', 'nodes created in the place of a node that was down', 'replacements');
  counter('keel_controller_destructions_total', 'nodes the provider destroyed', 'destructions');
  counter('keel_controller_leases_ended_total', "dead leaders' leases ended after a confirmed fence, so that a replica promotes at once", 'leasesEnded');
  counter('keel_controller_scale_outs_total', 'scale-outs the autoscaler decided', 'scaleOuts');
  counter('keel_controller_scale_ins_total', 'scale-ins the autoscaler decided', 'scaleIns');
  counter('keel_controller_failed_actions_total', 'actions that failed (each is also an action-failed event)', 'failedActions');
  new Counter({
    name: 'keel_controller_fencings_total',
    help: 'fences asked of the provider, by whether it confirmed the node can no longer write',
    labelNames: ['confirmed'],
    registers,
    collect() {
      this.reset();
      this.inc({ confirmed: 'true' }, all().reduce((sum, c) => sum + c.counts.fencings, 0));
      this.inc({ confirmed: 'false' }, all().reduce((sum, c) => sum + c.counts.unconfirmedFencings, 0));
    },
  });

  const autoscale = (name: string, help: string, read: (c: MeasuredController) => number | null, labelled = false) =>
    new Gauge({
      name,
      help,
      labelNames: labelled ? ['metric'] : [],
      registers,
      collect() {
        this.reset();
        const c = acting();
        const value = c === null ? null : read(c);
        const metric = c?.lastSpec?.autoscale.metric;
        if (labelled && metric !== undefined) this.set({ metric }, value ?? Number.NaN);
        else if (!labelled) this.set(value ?? Number.NaN);
      },
    });
  autoscale('keel_autoscale_enabled', '1 when the spec turns the autoscaler on', (c) => (c.lastSpec === null ? null : c.lastSpec.autoscale.enabled ? 1 : 0));
  autoscale('keel_autoscale_metric_value', "the autoscaler's metric now: its average over streaming replicas (NaN without data)", (c) => c.lastAutoscale?.metric ?? null, true);
  autoscale('keel_autoscale_target', "the autoscaler's target for its metric", (c) => c.lastSpec?.autoscale.target ?? null, true);
  autoscale('keel_autoscale_replicas', 'replicas the spec holds now, as the autoscaler counts them', (c) => c.lastAutoscale?.currentReplicas ?? null);
  autoscale('keel_autoscale_wanted_replicas', 'replicas the autoscaler would have for its target (NaN when it holds for lack of data)', (c) => c.lastAutoscale?.wantedReplicas ?? null);
  return registry;
}
