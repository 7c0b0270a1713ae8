/**
 * deploy/systemd: the units an EC2 node runs (README, "On AWS"). systemd-analyze verify checks them as
 * systemd would load them; the rest holds the directives Keel's safety depends on: the guard before the
 * agent, a postmaster that outlives its agent, logs in the journal.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { directive, directiveWords, parseUnitFile } from '../support/systemd-unit.js';
import { defaultAgentNodeFlags } from '../../src/providers/agent-process.js';

const unitsDir = join(import.meta.dirname, '../../deploy/systemd');
const unitFiles = ['keel-guard@.service', 'keel-agent@.service', 'keel-router.service'];

const units = Object.fromEntries(unitFiles.map((file) => [file, parseUnitFile(readFileSync(join(unitsDir, file), 'utf8'))]));

function get(file: string, section: string, key: string): string | undefined {
  return directive(units[file]!, section, key);
}
function words(file: string, section: string, key: string): string[] {
  return directiveWords(units[file]!, section, key);
}

const hasAnalyze = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' }).status === 0;

const work = mkdtempSync(join(tmpdir(), 'keel-units-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('systemd-analyze verify', () => {
  it('accepts the three units', () => {
    // no quiet skip: the systemd package ships systemd-analyze and `make setup` installs it
    expect(hasAnalyze, 'systemd-analyze is missing: run make setup (the systemd package)').toBe(true);
    // instances need a name: verify keel-agent@node.service as the user data enables it
    for (const file of unitFiles) copyFileSync(join(unitsDir, file), join(work, file));
    const targets = ['keel-guard@node.service', 'keel-agent@node.service', 'keel-router.service'].map((u) => join(work, u));
    const result = spawnSync('systemd-analyze', ['verify', '--man=no', ...targets], { encoding: 'utf8', env: { ...process.env, SYSTEMD_LOG_LEVEL: 'notice' } });
    // verify prints a line for anything it dislikes (unknown directive, bad value, missing binary)
    const complaints = result.stderr.split('\n').filter((l) => l.trim() !== '' && !/Failed to (connect|open).*bus|No such file or directory.*\/run\/systemd/i.test(l));
    expect(complaints).toEqual([]);
    expect(result.status).toBe(0);
  });
});

describe('the guard', () => {
  const file = 'keel-guard@.service';
  it('reads the instance config and restarts always, within limits', () => {
    expect(get(file, 'Service', 'ExecStart')).toBe('/usr/bin/node /opt/keel/bin/keel.js guard --config /etc/keel/%i.yml');
    expect(get(file, 'Service', 'Restart')).toBe('always');
    expect(Number(get(file, 'Unit', 'StartLimitBurst'))).toBeGreaterThan(1);
    expect(get(file, 'Unit', 'StartLimitIntervalSec')).toBeDefined();
  });
  it('depends on nothing of the agent, so restarting or stopping the agent leaves it running', () => {
    for (const key of ['Requires', 'BindsTo', 'PartOf', 'Requisite', 'Wants', 'After']) {
      expect(words(file, 'Unit', key).filter((w) => w.includes('keel-agent'))).toEqual([]);
    }
  });
  it('keeps what it needs: signals, /proc of the postgres user, the watchdog device', () => {
    expect(words(file, 'Service', 'CapabilityBoundingSet')).toEqual(expect.arrayContaining(['CAP_KILL', 'CAP_SYS_PTRACE', 'CAP_DAC_OVERRIDE']));
    expect(get(file, 'Service', 'PrivateDevices')).toBeUndefined();
    expect(get(file, 'Service', 'ProtectClock')).toBeUndefined();
    expect(get(file, 'Service', 'DevicePolicy')).toBeUndefined();
    expect(get(file, 'Service', 'StandardOutput')).toBe('journal');
  });
});

describe('the agent', () => {
  const file = 'keel-agent@.service';
  it('requires its guard and starts after it', () => {
    expect(words(file, 'Unit', 'Requires')).toContain('keel-guard@%i.service');
    expect(words(file, 'Unit', 'After')).toContain('keel-guard@%i.service');
  });
  it('lets the detached postmaster outlive it: only the agent is signalled', () => {
    expect(get(file, 'Service', 'KillMode')).toBe('process');
    // a PostgreSQL backend killed by the kernel's OOM killer must not stop the unit
    expect(get(file, 'Service', 'OOMPolicy')).toBe('continue');
    expect(get(file, 'Service', 'TasksMax')).toBe('infinity');
    expect(get(file, 'Service', 'MemoryMax')).toBeUndefined();
    // PostgreSQL lives in the agent's mount namespace: a private /tmp would part it from the next agent
    expect(get(file, 'Service', 'PrivateTmp')).toBeUndefined();
    expect(Number.parseInt(get(file, 'Service', 'TimeoutStopSec') ?? '0', 10)).toBeGreaterThanOrEqual(120);
  });
  it('runs as root, restarts always within limits, logs to the journal', () => {
    // the V8 flags every provider starts an agent with, and one malloc arena
    expect(get(file, 'Service', 'ExecStart')).toBe(`/usr/bin/node ${defaultAgentNodeFlags.join(' ')} /opt/keel/bin/keel.js agent --config /etc/keel/%i.yml`);
    expect(get(file, 'Service', 'Environment')).toBe('MALLOC_ARENA_MAX=1');
    expect(get(file, 'Service', 'User')).toBe('root');
    expect(get(file, 'Service', 'Restart')).toBe('always');
    expect(Number(get(file, 'Unit', 'StartLimitBurst'))).toBeGreaterThan(1);
    expect(get(file, 'Service', 'StandardOutput')).toBe('journal');
    expect(get(file, 'Service', 'StandardError')).toBe('journal');
  });
  it('keeps the capabilities it needs to run PostgreSQL as postgres and check its postmaster', () => {
    expect(words(file, 'Service', 'CapabilityBoundingSet')).toEqual(
      expect.arrayContaining(['CAP_SETUID', 'CAP_SETGID', 'CAP_CHOWN', 'CAP_FOWNER', 'CAP_DAC_OVERRIDE', 'CAP_KILL', 'CAP_SYS_PTRACE']),
    );
    expect(words(file, 'Service', 'ReadWritePaths')).toContain('/etc/keel');
    // /var/lib/keel stays writable: strict would make /var read-only
    expect(get(file, 'Service', 'ProtectSystem')).toBe('full');
    // Node's JIT needs writable and executable memory
    expect(get(file, 'Service', 'MemoryDenyWriteExecute')).toBeUndefined();
  });
});

describe('the router', () => {
  const file = 'keel-router.service';
  it('runs unprivileged with its client pair handed over as credentials', () => {
    expect(get(file, 'Service', 'DynamicUser')).toBe('yes');
    expect(get(file, 'Service', 'User')).toBeUndefined();
    expect(units[file]!.get('Service')!.get('LoadCredential')).toEqual([
      'etcd-ca.crt:/etc/keel/tls/ca.crt',
      'router.crt:/etc/keel/tls/router.crt',
      'router.key:/etc/keel/tls/router.key',
    ]);
    const exec = get(file, 'Service', 'ExecStart')!;
    for (const flag of ['--etcd ${KEEL_ETCD}', '--cluster ${KEEL_CLUSTER}', '--rw ${KEEL_ROUTER_RW}', '--ro ${KEEL_ROUTER_RO}', '--etcd-cacert ', '--etcd-cert ', '--etcd-key ${CREDENTIALS_DIRECTORY}/router.key']) {
      expect(exec).toContain(flag);
    }
    expect(get(file, 'Service', 'EnvironmentFile')).toBe('/etc/keel/router.env');
    expect(get(file, 'Service', 'Restart')).toBe('always');
    expect(get(file, 'Service', 'StandardOutput')).toBe('journal');
  });
});

describe('every unit', () => {
  it.each(unitFiles)('%s is installable and wanted by multi-user.target', (file) => {
    expect(get(file, 'Install', 'WantedBy')).toBe('multi-user.target');
    expect(get(file, 'Service', 'NoNewPrivileges')).toBe('yes');
  });
});
