/**
 * The user data of an AWS node, run for real on a test host that already has the packages: in a network
 * namespace of its own, with every path under a temporary root, the secrets from a local directory laid
 * out like the SSM parameters, the address given instead of IMDS, and no unit started (KEEL_BOOT_SYSTEMD=0).
 * It must install nothing, write a node.yml the agent accepts and the keys with PostgreSQL's owner, print
 * no secret, do the same again when run twice, and refuse a certificate that does not name the address.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNodeConfig } from '../../src/config/load.js';
import { buildUserData, instanceIdParameter, parseAwsNodeOptions, secretParameters, type AwsNodeOptionsInput } from '../../src/providers/aws-userdata.js';
import { ensureCertificateAuthority, issueCertificate } from '../../src/tls/pki.js';

const repo = join(import.meta.dirname, '../..');
const isRoot = process.getuid?.() === 0;
const hasPostgres = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'postgresql-15'], { encoding: 'utf8' }).stdout.includes('install ok installed');
const built = existsSync(join(repo, 'dist/providers/aws-boot.js'));
const runnable = isRoot && hasPostgres && built;
const namespace = `keel-ud-${process.pid}`;

const options: AwsNodeOptionsInput = {
  name: 'node1',
  cluster: 'main',
  region: 'eu-west-1',
  zone: 'eu-west-1a',
  etcdEndpoints: ['https://10.0.1.10:2379'],
  clusterCidrs: ['10.0.0.0/16'],
  keel: { kind: 'path', path: repo },
  nodejs: 'present',
  router: { rw: '0.0.0.0:5432', ro: '0.0.0.0:5433' },
};
const passwords: Record<string, string> = {
  'superuser-password': 'boot-test-superuser-pw-7f3a',
  'rewind-password': 'boot-test-rewind-pw-91c2e',
  'app-password': 'boot-test-app-pw-44d0b8',
  'api-token': 'boot-test-api-token-abcdefghijklmnopqrstuvwxyz',
};

const work = mkdtempSync('/tmp/keel-boot-');
const secretsDir = join(work, 'ssm');
const script = join(work, 'user-data.sh');
let inNamespace = false;
const instanceId = 'i-0b00700000000000a';
/** loop devices standing for EBS data volumes, detached in afterAll */
const loopDevices: string[] = [];
const mounts: string[] = [];

function postgresIds(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'))!;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function run(root: string, address: string, more: { dataDevice?: string; instanceId?: string } = {}): { status: number | null; output: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, KEEL_BOOT_ROOT: root, KEEL_BOOT_SECRETS_DIR: secretsDir, KEEL_BOOT_ADDRESS: address, KEEL_BOOT_INSTANCE_ID: more.instanceId ?? instanceId, KEEL_BOOT_SYSTEMD: '0' };
  if (more.dataDevice !== undefined) env.KEEL_BOOT_DATA_DEVICE = more.dataDevice;
  // a mount made inside `ip netns exec` (its own mount namespace) would be gone when the script ends
  const command = inNamespace && more.dataDevice === undefined ? ['ip', ['netns', 'exec', namespace, 'bash', script]] as const : ['bash', [script]] as const;
  const result = spawnSync(command[0], [...command[1]], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

beforeAll(async () => {
  // no quiet skip: where this cannot run the suite fails and says why
  if (!runnable) throw new Error(`the user-data test needs root, postgresql-15 and a build (root: ${isRoot}, postgresql-15: ${hasPostgres}, built: ${built}); make setup installs and builds`);
  inNamespace = spawnSync('ip', ['netns', 'add', namespace]).status === 0;
  const parsed = parseAwsNodeOptions(options);
  const parameters = secretParameters(parsed);
  const file = (key: string): string => {
    const path = join(secretsDir, parameters[key as keyof typeof parameters]!);
    mkdirSync(dirname(path), { recursive: true });
    return path;
  };
  // passwords as the AWS CLI prints them: with a line break
  for (const [key, value] of Object.entries(passwords)) writeFileSync(file(key), `${value}\n`, { mode: 0o600 });
  const ca = await ensureCertificateAuthority({ cert: join(work, 'ca/ca.crt'), key: join(work, 'ca/ca.key') }, 'keel boot test CA');
  await issueCertificate(ca, { cert: file('node.crt'), key: file('node.key') }, { commonName: 'main-agent', names: ['10.0.1.21'], usage: 'both' });
  await issueCertificate(ca, { cert: file('replication.crt'), key: file('replication.key') }, { commonName: 'replicator', usage: 'client' });
  await issueCertificate(ca, { cert: file('router.crt'), key: file('router.key') }, { commonName: 'main-router', usage: 'client' });
  writeFileSync(file('ca.crt'), readFileSync(ca.cert));
  // what the controller writes last once the rest is there: the instance these parameters are for
  writeFileSync(join(secretsDir, instanceIdParameter(parsed.parameterPrefix ?? '/keel/main', parsed.name)), instanceId, { mode: 0o600 });
  writeFileSync(script, buildUserData(options), { mode: 0o700 });
});

/** A blank 64 MiB block device, as a new EBS volume is. */
function blankDevice(name: string): string {
  const image = join(work, `${name}.img`);
  writeFileSync(image, '');
  spawnSync('truncate', ['-s', '64M', image]);
  const attached = spawnSync('losetup', ['-f', '--show', image], { encoding: 'utf8' });
  if (attached.status !== 0) throw new Error(`losetup failed: ${attached.stderr}`);
  const device = attached.stdout.trim();
  loopDevices.push(device);
  return device;
}

const findmnt = (path: string): string => spawnSync('findmnt', ['-n', '-r', '-o', 'SOURCE,FSTYPE,LABEL', '-M', path], { encoding: 'utf8' }).stdout.trim();

afterAll(() => {
  // unmounted before the directory holding them goes, then detached
  for (const mount of mounts.reverse()) spawnSync('umount', [mount]);
  for (const device of loopDevices) spawnSync('losetup', ['-d', device]);
  if (inNamespace) spawnSync('ip', ['netns', 'delete', namespace]);
  rmSync(work, { recursive: true, force: true });
});

describe('the user data on a test host', () => {
  const root = join(work, 'host1');

  it('writes node.yml, the certificates and the directories, and prints no secret', () => {
    const first = run(root, '10.0.1.21');
    expect(first.output).toContain('not starting units');
    expect(first.status).toBe(0);
    expect(first.output).not.toContain('installing');
    for (const value of Object.values(passwords)) expect(first.output).not.toContain(value);

    const nodeYml = join(root, 'etc/keel/node.yml');
    expect(statSync(nodeYml).mode & 0o777).toBe(0o600);
    expect(statSync(nodeYml).uid).toBe(0);
    const config = loadNodeConfig(nodeYml);
    expect(config.postgres.superuser.password).toBe(passwords['superuser-password']);
    expect(config.api.token).toBe(passwords['api-token']);
    expect(config.postgres.connectAddress).toBe('10.0.1.21:5432');
    expect(config.postgres.dataDir).toBe(join(root, 'var/lib/keel/postgres/data'));
    expect(config.tls?.key).toBe(join(root, 'etc/keel/tls/node.key'));
    expect(config.guard?.socket).toBe(join(root, 'var/lib/keel/guard.sock'));

    const pg = postgresIds();
    for (const key of ['node.key', 'replication.key']) {
      const info = statSync(join(root, 'etc/keel/tls', key));
      expect([info.mode & 0o777, info.uid, info.gid]).toEqual([0o600, pg.uid, pg.gid]);
    }
    for (const cert of ['ca.crt', 'node.crt', 'replication.crt', 'router.crt']) expect(statSync(join(root, 'etc/keel/tls', cert)).mode & 0o777).toBe(0o644);
    const routerKey = statSync(join(root, 'etc/keel/tls/router.key'));
    expect([routerKey.mode & 0o777, routerKey.uid]).toEqual([0o600, 0]);
    expect(readFileSync(join(root, 'etc/keel/router.env'), 'utf8')).toContain('KEEL_ROUTER_RW=0.0.0.0:5432');
    const pgDir = statSync(join(root, 'var/lib/keel/postgres'));
    expect([pgDir.mode & 0o777, pgDir.uid]).toEqual([0o700, pg.uid]);
    // Keel from the given path, linked where the units look for it
    expect(existsSync(join(root, 'opt/keel/bin/keel.js'))).toBe(true);
  });

  it('does the same again when run a second time', () => {
    const again = run(root, '10.0.1.21');
    expect(again.status).toBe(0);
    expect(loadNodeConfig(join(root, 'etc/keel/node.yml')).name).toBe('node1');
  });

  it('waits for the parameters of its own instance: those of another instance of the same name are not read', () => {
    const other = join(work, 'host-stale');
    const started = Date.now();
    const stale = spawnSync('bash', [script], {
      env: { ...process.env, KEEL_BOOT_ROOT: other, KEEL_BOOT_SECRETS_DIR: secretsDir, KEEL_BOOT_ADDRESS: '10.0.1.21', KEEL_BOOT_INSTANCE_ID: 'i-0ffff00000000000b', KEEL_BOOT_SYSTEMD: '0' },
      encoding: 'utf8',
      timeout: 4000,
    });
    // still waiting when stopped: it had read no secret and written no node.yml
    expect(stale.signal).toBe('SIGTERM');
    expect(Date.now() - started).toBeGreaterThanOrEqual(3900);
    expect(`${stale.stdout}${stale.stderr}`).toContain('waiting for the credentials of i-0ffff00000000000b');
    expect(existsSync(join(other, 'etc/keel/node.yml'))).toBe(false);
  });

  it('formats a blank data volume as ext4 keel-data, mounts it on /var/lib/keel, and never formats it again', () => {
    const hostRoot = join(work, 'host-volume');
    const device = blankDevice('data');
    mounts.push(join(hostRoot, 'var/lib/keel'));
    const first = run(hostRoot, '10.0.1.21', { dataDevice: device });
    expect(first.status, first.output).toBe(0);
    expect(first.output).toContain(`formatting the data volume ${device}`);
    expect(findmnt(join(hostRoot, 'var/lib/keel'))).toBe(`${device} ext4 keel-data`);
    // PostgreSQL's directory is on it
    expect(spawnSync('findmnt', ['-n', '-o', 'SOURCE', '-T', join(hostRoot, 'var/lib/keel/postgres')], { encoding: 'utf8' }).stdout.trim()).toBe(device);
    writeFileSync(join(hostRoot, 'var/lib/keel/marker'), 'kept');
    spawnSync('umount', [join(hostRoot, 'var/lib/keel')]);

    const again = run(hostRoot, '10.0.1.21', { dataDevice: device });
    expect(again.status, again.output).toBe(0);
    expect(again.output).not.toContain('formatting');
    expect(readFileSync(join(hostRoot, 'var/lib/keel/marker'), 'utf8')).toBe('kept');
  });

  it('refuses a data volume that holds another file system, and leaves it as it was', () => {
    const hostRoot = join(work, 'host-foreign');
    const device = blankDevice('foreign');
    expect(spawnSync('mkfs.ext4', ['-q', '-L', 'someone-else', device]).status).toBe(0);
    const result = run(hostRoot, '10.0.1.21', { dataDevice: device });
    expect(result.status).not.toBe(0);
    expect(result.output).toContain("not Keel's ext4 keel-data: not touching it");
    expect(spawnSync('blkid', ['-o', 'value', '-s', 'LABEL', device], { encoding: 'utf8' }).stdout.trim()).toBe('someone-else');
    expect(findmnt(join(hostRoot, 'var/lib/keel'))).toBe('');
    expect(existsSync(join(hostRoot, 'etc/keel/node.yml'))).toBe(false);
  });

  it('refuses a node certificate that does not name the address, and writes no node.yml', () => {
    const other = join(work, 'host2');
    const result = run(other, '10.0.1.99');
    expect(result.status).not.toBe(0);
    expect(result.output).toContain('KEEL_TLS_FAILED');
    expect(existsSync(join(other, 'etc/keel/node.yml'))).toBe(false);
  });
});

