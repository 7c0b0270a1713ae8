/**
 * GET /metrics in Prometheus' text format. Values are read from the agent at
 * scrape time (collect callbacks), so the loop never pays for metrics. Each
 * API gets its own Registry: the global one would mix in whatever else shares
 * the process (and break tests that build several APIs).
 */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Registry } from 'prom-client';
import { readCertificate } from '../tls/pki.js';
import { collectProcessMetrics } from '../util/metrics.js';
import type { MemberArchive } from '../model/values.js';
import type { AgentHandle, ApiOptions } from './handle.js';
import { buildPatroniRegistry } from './patroni-metrics.js';
import { nodeRoles, observeNode } from './status.js';

/** `replica:` (a decision with no action) reads better as `replica:none`. */
function decisionLabel(key: string): string {
  return key.endsWith(':') ? `${key}none` : key;
}

export function buildRegistry(handle: AgentHandle, options: ApiOptions): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ cluster: options.node.cluster, member: options.node.name });
  collectProcessMetrics(registry);
  const facts = () => observeNode(handle, options.node, options.clock.now());

  new Gauge({
    name: 'keel_role',
    help: 'role of this node: 1 for the current one (leader = holds the key and runs the primary)',
    labelNames: ['role'],
    registers: [registry],
    collect() {
      const role = facts().status.role;
      for (const r of nodeRoles) this.set({ role: r }, r === role ? 1 : 0);
    },
  });
  new Gauge({
    name: 'keel_timeline',
    help: 'PostgreSQL timeline of this node (NaN when unknown)',
    registers: [registry],
    collect() {
      this.set(facts().status.timeline ?? Number.NaN);
    },
  });
  new Gauge({
    name: 'keel_replication_lag_bytes',
    help: "bytes of WAL this replica's replay is behind the leader's published position (0 on the leader, NaN when unknown)",
    registers: [registry],
    collect() {
      const status = facts().status;
      this.set(status.role === 'leader' ? 0 : (status.lag_bytes ?? Number.NaN));
    },
  });
  new Gauge({
    name: 'keel_maximum_lag_on_failover_bytes',
    help: 'the most a replica may lag behind the leader and still be promoted (maximum_lag_on_failover; NaN before the first loop)',
    registers: [registry],
    collect() {
      this.set(handle.lastSnapshot?.config.maximum_lag_on_failover ?? Number.NaN);
    },
  });
  new Gauge({
    name: 'keel_postgres_running',
    help: '1 when PostgreSQL accepted connections at the last loop',
    registers: [registry],
    collect() {
      this.set(facts().postgresRunning ? 1 : 0);
    },
  });
  if (options.certificateFile !== undefined) {
    const file = options.certificateFile;
    new Gauge({
      name: 'keel_tls_certificate_expiry_seconds',
      help: "seconds until this node's certificate (PostgreSQL, API, etcd client) expires, read from the file at each scrape (NaN when unreadable)",
      registers: [registry],
      collect() {
        try {
          this.set((readCertificate(file).notAfter.getTime() - options.clock.now()) / 1000);
        } catch {
          this.set(Number.NaN);
        }
      },
    });
  }
  // Counters kept by the agent: the scrape copies them (reset, then add the running total).
  const copied = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  copied('keel_lease_renewals_total', 'lease keep-alives etcd acknowledged', () => handle.lease.renewals);
  copied('keel_lease_renewal_failures_total', 'lease keep-alives that failed (etcd unreachable or slow)', () => handle.lease.renewalFailures);
  copied('keel_failovers_total', 'promotions this node carried out (failovers and switchovers to it)', () => handle.promotions);
  if (handle.archive !== undefined) registerArchiveMetrics(registry, handle.archive, copied);
  new Counter({
    name: 'keel_decisions_total',
    help: 'loop decisions, by next state and actions (`state:action,action`)',
    labelNames: ['decision'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [key, count] of handle.decisionCounts) this.inc({ decision: decisionLabel(key) }, count);
    },
  });
  return registry;
}

/** WAL archiving, while this node is primary (NaN, or 0 for the counters, while it is not). */
function registerArchiveMetrics(registry: Registry, archive: NonNullable<AgentHandle['archive']>, copied: (name: string, help: string, read: () => number) => Counter): void {
  const gauge = (name: string, help: string, read: (a: MemberArchive) => number | null) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const current = archive.current();
        this.set(current === undefined ? Number.NaN : (read(current) ?? Number.NaN));
      },
    });
  const counter = (name: string, help: string, read: (a: MemberArchive) => number) => copied(name, help, () => {
    const current = archive.current();
    return current === undefined ? 0 : read(current);
  });
  counter('keel_archive_failed_total', "WAL archiving attempts that failed on this primary (pg_stat_archiver's failed_count)", (a) => a.failedCount);
  counter('keel_archive_archived_total', "WAL files this primary archived (pg_stat_archiver's archived_count)", (a) => a.archivedCount);
  gauge('keel_archive_last_success_timestamp_seconds', 'when the last WAL file reached the repository (Unix time)', (a) => (a.lastArchivedAtMs === null ? null : a.lastArchivedAtMs / 1000));
  gauge('keel_archive_failing', '1 while the last archiving attempt failed after the last success', (a) => (a.state === 'failing' ? 1 : 0));
  gauge('keel_archive_lag_bytes', 'WAL written but not yet in the repository: the segment being written and those waiting', (a) => a.lagBytes);
  gauge('keel_archive_lag_seconds', 'seconds since the last WAL file reached the repository while WAL waits (0 when none waits)', (a) => a.lagSeconds);
}

export function registerMetrics(app: FastifyInstance, handle: AgentHandle, options: ApiOptions): void {
  const registry = buildRegistry(handle, options);
  // Patroni's names carry Patroni's labels (scope, name): a registry of their own, served after keel_*
  const patroni = buildPatroniRegistry(handle, options);
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', registry.contentType);
    return (await registry.metrics()) + (await patroni.metrics());
  });
}
