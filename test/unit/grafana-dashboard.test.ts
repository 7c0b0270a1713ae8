/**
 * deploy/grafana/keel.json, the dashboard to import into Grafana: its shape
 * (what Grafana needs to import it: a uid, a schema version, the datasource
 * and cluster variables, panels with unique ids laid out on the 24-column
 * grid without overlap, each query with a refId), that every metric it
 * queries is one Keel serves (from the agent's, router's and controller's
 * registries), and that every query is PromQL Prometheus accepts.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { buildRegistry } from '../../src/api/metrics.js';
import { buildPatroniRegistry } from '../../src/api/patroni-metrics.js';
import type { AgentHandle, ApiOptions } from '../../src/api/handle.js';
import { buildControllerRegistry } from '../../src/controller/metrics.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { RouterMetrics } from '../../src/router/metrics.js';
import { noRoutes } from '../../src/router/route.js';
import { silentLogger } from '../../src/util/log.js';

interface Target {
  refId: string;
  expr: string;
  datasource?: { uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource: { type: string; uid: string };
  targets: Target[];
}

const dashboard = JSON.parse(readFileSync(join(import.meta.dirname, '../../deploy/grafana/keel.json'), 'utf8')) as {
  title: string;
  uid: string;
  schemaVersion: number;
  templating: { list: { name: string; type: string; query: unknown }[] };
  panels: Panel[];
};
const targets = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, ...t })));

/** Every metric name Keel serves: the agent's (with archiving on), the router's and the controller's. */
function servedNames(): Set<string> {
  const clock = { now: () => 0 };
  const handle: AgentHandle = {
    state: 'replica',
    lastReason: '',
    lastSnapshot: null,
    lease: { id: null, lastRenewalMs: null, renewals: 0, renewalFailures: 0, deadlineMs: () => 0 },
    decisionCounts: new Map(),
    promotions: 0,
    archive: { current: () => undefined },
    runManual: async () => undefined,
  };
  const options: ApiOptions = { node: { name: 'n', cluster: 'c', tags: {} }, token: undefined, certificateFile: '/nonexistent', dcs: new MemoryDcs({ cluster: 'c', clock }), clock, logger: silentLogger() };
  const engine = { name: 'builtin', stats: async () => ({ rw: null, ro: null }) as never };
  const registries = [
    buildRegistry(handle, options),
    buildPatroniRegistry(handle, options),
    new RouterMetrics(engine, { current: noRoutes, lastReadAtMs: 0, failingClosed: false }, 'c').registry,
    buildControllerRegistry('c', () => []),
  ];
  return new Set(registries.flatMap((r) => r.getMetricsAsArray().map((m) => m.name)));
}

describe('the Grafana dashboard', () => {
  it('has what Grafana needs to import it', () => {
    expect(dashboard.title).toBe('Keel');
    expect(dashboard.uid).toMatch(/^[a-z0-9-]{1,40}$/);
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const variables = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]));
    expect(variables.datasource).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(variables.cluster?.type).toBe('query');
    expect(dashboard.panels.length).toBeGreaterThanOrEqual(10);
  });

  it('has panels with unique ids, known types, on the 24-column grid without overlap, each query on the chosen datasource', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const taken = new Set<string>();
    for (const p of dashboard.panels) {
      expect(['stat', 'timeseries', 'table', 'gauge', 'text'], p.title).toContain(p.type);
      const { x, y, w, h } = p.gridPos;
      expect([x, y, w, h].every(Number.isInteger), p.title).toBe(true);
      expect(x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0, p.title).toBe(true);
      for (let col = x; col < x + w; col++) {
        for (let row = y; row < y + h; row++) {
          expect(taken.has(`${col},${row}`), `${p.title} overlaps another panel at ${col},${row}`).toBe(false);
          taken.add(`${col},${row}`);
        }
      }
      expect(p.datasource.uid).toBe('${datasource}');
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      const refIds = p.targets.map((t) => t.refId);
      expect(new Set(refIds).size, p.title).toBe(refIds.length);
    }
  });

  it('queries only metrics Keel serves', () => {
    const served = servedNames();
    const used = new Set(targets.flatMap((t) => [...t.expr.matchAll(/\b((?:keel|patroni)_[a-z0-9_]+)\b/g)].map((m) => m[1]!)));
    expect(used.size).toBeGreaterThan(20);
    expect([...used].filter((name) => !served.has(name))).toEqual([]);
  });

  it('queries in PromQL that Prometheus accepts', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-grafana-'));
    try {
      // each query as a recording rule, with Grafana's variables as Prometheus would receive them
      const rules = targets.map((t, i) => ({ record: `keel_dashboard_query_${i}`, expr: t.expr.replaceAll('$cluster', 'main').replaceAll('$__rate_interval', '1m') }));
      const file = join(dir, 'queries.yml');
      writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
      const check = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
      if (check.error) throw new Error(`promtool (Debian's prometheus package, installed by scripts/setup.sh) cannot run: ${check.error.message}`);
      expect(check.status, `${check.stdout}${check.stderr}`).toBe(0);
      expect(check.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
