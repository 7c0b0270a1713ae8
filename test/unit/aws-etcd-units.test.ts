/**
 * deploy/systemd's units of an etcd member on AWS: keel-etcd.service (Debian's etcd with Keel's
 * /etc/default/etcd, as the etcd user) and keel-controller.service (keel controller with the AWS flags, its
 * client pair handed over as credentials). systemd-analyze verify checks them as systemd would load them.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { awsEtcdPaths } from '../../src/providers/aws-etcd-userdata.js';
import { directive, directiveWords, parseUnitFile } from '../support/systemd-unit.js';

const unitsDir = join(import.meta.dirname, '../../deploy/systemd');
const files = ['keel-etcd.service', 'keel-controller.service'];
const etcd = parseUnitFile(readFileSync(join(unitsDir, 'keel-etcd.service'), 'utf8'));
const controller = parseUnitFile(readFileSync(join(unitsDir, 'keel-controller.service'), 'utf8'));

const work = mkdtempSync(join(tmpdir(), 'keel-etcd-units-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('systemd-analyze verify', () => {
  it('accepts both units', () => {
    const which = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' });
    // no quiet skip: the systemd package ships systemd-analyze and `make setup` installs it
    expect(which.status, 'systemd-analyze is missing: run make setup (the systemd package)').toBe(0);
    for (const file of files) copyFileSync(join(unitsDir, file), join(work, file));
    const result = spawnSync('systemd-analyze', ['verify', '--man=no', ...files.map((f) => join(work, f))], { encoding: 'utf8', env: { ...process.env, SYSTEMD_LOG_LEVEL: 'notice' } });
    // verify prints a line for anything it dislikes (unknown directive, bad value, missing binary)
    const complaints = result.stderr.split('\n').filter((l) => l.trim() !== '' && !/Failed to (connect|open).*bus|No such file or directory.*\/run\/systemd/i.test(l));
    expect(complaints).toEqual([]);
    expect(result.status).toBe(0);
  });
});

describe('keel-etcd.service', () => {
  it("runs Debian's etcd on the settings the boot writes, as the etcd user", () => {
    expect(directive(etcd, 'Service', 'ExecStart')).toBe('/usr/bin/etcd');
    expect(directive(etcd, 'Service', 'EnvironmentFile')).toBe(awsEtcdPaths.etcdEnv);
    expect(directive(etcd, 'Service', 'User')).toBe('etcd');
    expect(directiveWords(etcd, 'Service', 'ReadWritePaths')).toEqual(['/var/lib/etcd']);
    expect(awsEtcdPaths.dataDir.startsWith('/var/lib/etcd/')).toBe(true);
  });
  it('is ready once it serves clients, waits for its quorum as long as it takes, restarts always', () => {
    expect(directive(etcd, 'Service', 'Type')).toBe('notify');
    expect(directive(etcd, 'Service', 'TimeoutStartSec')).toBe('infinity');
    expect(directive(etcd, 'Service', 'Restart')).toBe('always');
    expect(Number(directive(etcd, 'Unit', 'StartLimitBurst'))).toBeGreaterThan(1);
  });
  it("never runs beside Debian's own etcd.service", () => {
    expect(directiveWords(etcd, 'Unit', 'Conflicts')).toContain('etcd.service');
  });
});

describe('keel-controller.service', () => {
  const exec = directive(controller, 'Service', 'ExecStart')!;
  it('runs keel controller with the AWS files and the members as its etcd', () => {
    expect(exec.startsWith('/usr/bin/node /opt/keel/bin/keel.js controller ')).toBe(true);
    for (const flag of [
      `--aws-config ${awsEtcdPaths.deployment}`,
      `--aws-launch ${awsEtcdPaths.launch}`,
      '--etcd ${KEEL_ETCD}',
      '--cluster ${KEEL_CLUSTER}',
      '--name ${KEEL_CONTROLLER_NAME}',
      '--etcd-cacert ${CREDENTIALS_DIRECTORY}/etcd-ca.crt',
      '--etcd-cert ${CREDENTIALS_DIRECTORY}/controller.crt',
      '--etcd-key ${CREDENTIALS_DIRECTORY}/controller.key',
    ]) {
      expect(exec).toContain(flag);
    }
    expect(directive(controller, 'Service', 'EnvironmentFile')).toBe(awsEtcdPaths.controllerEnv);
  });
  it('runs unprivileged with its client pair handed over as credentials', () => {
    expect(directive(controller, 'Service', 'DynamicUser')).toBe('yes');
    expect(directive(controller, 'Service', 'User')).toBeUndefined();
    expect(controller.get('Service')!.get('LoadCredential')).toEqual([
      `etcd-ca.crt:${awsEtcdPaths.tlsDir}/ca.crt`,
      `controller.crt:${awsEtcdPaths.tlsDir}/controller.crt`,
      `controller.key:${awsEtcdPaths.tlsDir}/controller.key`,
    ]);
  });
  it('starts after etcd and restarts always', () => {
    expect(directiveWords(controller, 'Unit', 'After')).toContain('keel-etcd.service');
    expect(directive(controller, 'Service', 'Restart')).toBe('always');
  });
});

describe('both units', () => {
  it.each([
    ['keel-etcd.service', etcd],
    ['keel-controller.service', controller],
  ])('%s is installable, confined, and logs to the journal', (_file, unit) => {
    expect(directive(unit, 'Install', 'WantedBy')).toBe('multi-user.target');
    expect(directive(unit, 'Service', 'NoNewPrivileges')).toBe('yes');
    expect(directive(unit, 'Service', 'ProtectSystem')).toBe('strict');
    expect(directive(unit, 'Service', 'CapabilityBoundingSet')).toBe('');
    expect(directive(unit, 'Service', 'StandardOutput')).toBe('journal');
  });
});
