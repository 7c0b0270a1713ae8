/**
 * deploy/prometheus/keel-alerts.yml, checked by Prometheus' own promtool:
 * the file is valid (`check rules`), and each alert fires on the series that
 * should make it fire and stays quiet on the others (`test rules`, series
 * written here).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

const rules = join(import.meta.dirname, '../../deploy/prometheus/keel-alerts.yml');
const dir = mkdtempSync(join(tmpdir(), 'keel-alerts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function promtool(args: string[]): { status: number | null; output: string } {
  const run = spawnSync('promtool', args, { encoding: 'utf8' });
  if (run.error) throw new Error(`promtool (Debian's prometheus package, installed by scripts/setup.sh) cannot run: ${run.error.message}`);
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

interface AlertTest {
  series: Record<string, string>;
  checks: { at: string; alert: string; firing: { labels: Record<string, string>; annotations?: Record<string, string> }[] }[];
}

/** Runs one `promtool test rules` case; fails with promtool's own account of what differed. */
function testRules(name: string, test: AlertTest): void {
  const file = join(dir, `${name}.yml`);
  writeFileSync(
    file,
    stringify({
      rule_files: [rules],
      evaluation_interval: '15s',
      tests: [
        {
          interval: '15s',
          input_series: Object.entries(test.series).map(([series, values]) => ({ series, values })),
          alert_rule_test: test.checks.map((c) => ({
            eval_time: c.at,
            alertname: c.alert,
            exp_alerts: c.firing.map((f) => ({ exp_labels: f.labels, ...(f.annotations ? { exp_annotations: f.annotations } : {}) })),
          })),
        },
      ],
    }),
  );
  const run = promtool(['test', 'rules', file]);
  expect(run.output).toContain('SUCCESS');
  expect(run.status, run.output).toBe(0);
}

describe('the alert rules', () => {
  it('are valid rules for Prometheus', () => {
    const run = promtool(['check', 'rules', rules]);
    expect(run.status, run.output).toBe(0);
    expect(run.output).toContain('SUCCESS: 7 rules found');
  });

  it('no leader: fires once no agent has led for 30 s, not while one leads', () => {
    testRules('no-leader', {
      series: {
        'keel_role{cluster="main",member="node1",role="leader"}': '1 1 1 1 0 0 0 0 0 0',
        'keel_role{cluster="main",member="node2",role="leader"}': '0x9',
      },
      checks: [
        { at: '45s', alert: 'KeelNoLeader', firing: [] },
        { at: '75s', alert: 'KeelNoLeader', firing: [] },
        {
          at: '2m',
          alert: 'KeelNoLeader',
          firing: [
            {
              labels: { severity: 'critical', cluster: 'main' },
              annotations: {
                summary: 'cluster main has no leader',
                description: 'No agent of cluster main holds the leader key and runs the primary: writes fail until one does. `keel status` shows why each member does what it does.',
              },
            },
          ],
        },
      ],
    });
  });

  it('lag: fires for the replica beyond maximum_lag_on_failover for 2 min, not for the one within it', () => {
    testRules('lag', {
      series: {
        'keel_replication_lag_bytes{cluster="main",member="node2"}': '5000000x12',
        'keel_replication_lag_bytes{cluster="main",member="node3"}': '1000x12',
        'keel_maximum_lag_on_failover_bytes{cluster="main",member="node2"}': '1048576x12',
        'keel_maximum_lag_on_failover_bytes{cluster="main",member="node3"}': '1048576x12',
      },
      checks: [
        { at: '1m', alert: 'KeelReplicationLagOverBound', firing: [] },
        { at: '3m', alert: 'KeelReplicationLagOverBound', firing: [{ labels: { severity: 'warning', cluster: 'main', member: 'node2' } }] },
      ].map((c) => ({ ...c, firing: c.firing.map((f) => ({ ...f, annotations: lagAnnotations })) })),
    });
  });

  it('archiving: fires while archive_command keeps failing, not for failures long past', () => {
    testRules('archiving', {
      series: {
        // fails every 15 s on node1; node2 failed once, then archived fine for half an hour
        'keel_archive_failed_total{cluster="main",member="node1"}': '0+1x60',
        'keel_archive_failed_total{cluster="main",member="node2"}': '1x120',
      },
      checks: [
        { at: '2m', alert: 'KeelArchivingFailing', firing: [] },
        {
          at: '10m',
          alert: 'KeelArchivingFailing',
          firing: [
            {
              labels: { severity: 'critical', cluster: 'main', member: 'node1' },
              annotations: {
                summary: 'WAL archiving fails on node1 of main',
                description: "archive_command has failed for five minutes or more on the leader node1: point-in-time recovery stops at the last archived WAL and pg_wal grows. `keel backup check` and the agent's events say why.",
              },
            },
          ],
        },
        { at: '30m', alert: 'KeelArchivingFailing', firing: [] },
      ],
    });
  });

  it('certificates: a warning within 14 days of expiry, critical within 2', () => {
    const day = 86400;
    testRules('certificates', {
      series: {
        // one expires in 10 days, one in a day, one in a year: each 15 s closer at each 15 s step
        'keel_tls_certificate_expiry_seconds{cluster="main",member="node1"}': `${10 * day}-15x300`,
        'keel_tls_certificate_expiry_seconds{cluster="main",member="node2"}': `${day}-15x300`,
        'keel_tls_certificate_expiry_seconds{cluster="main",member="node3"}': `${365 * day}-15x300`,
      },
      checks: [
        {
          at: '61m',
          alert: 'KeelCertificateExpiresSoon',
          firing: ['node1', 'node2'].map((member) => ({ labels: { severity: 'warning', cluster: 'main', member } })),
        },
        { at: '11m', alert: 'KeelCertificateExpiresVerySoon', firing: [{ labels: { severity: 'critical', cluster: 'main', member: 'node2' } }] },
      ].map((c) => ({ ...c, firing: c.firing.map((f) => ({ ...f, annotations: certificateAnnotations(c.alert, f.labels.member) })) })),
    });
  });
});

const lagAnnotations = {
  summary: 'node2 of main lags beyond maximum_lag_on_failover',
  description: 'node2 is 4.768Mi' + 'B behind the leader, more than maximum_lag_on_failover allows: it cannot take over in a failover until it catches up.',
};

function certificateAnnotations(alert: string, member: string): Record<string, string> {
  const soon = alert === 'KeelCertificateExpiresSoon';
  const left = member === 'node1' ? '9d 22h 59m 0s' : '22h 59m 0s';
  const leftCritical = '23h 49m 0s';
  return soon
    ? { summary: `the certificate of ${member} (main) expires within 14 days`, description: `It expires in ${left}. \`keel certs rotate\` issues new ones and reloads every holder in place.` }
    : { summary: `the certificate of ${member} (main) expires within 2 days`, description: `It expires in ${leftCritical}; once it has, PostgreSQL, the REST API and etcd refuse this node. \`keel certs rotate\` issues new ones.` };
}
