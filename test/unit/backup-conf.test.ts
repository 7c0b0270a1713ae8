/**
 * A node's pgBackRest files and archiving settings, the backup block of
 * node.yml, and a local cluster's node configuration with its repository.
 */
import { mkdtempSync, rmSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildPgbackrestConf, buildPgbackrestPgpass } from '../../src/backup/conf.js';
import { nodeConfigSchema, type NodeConfig } from '../../src/config/schema.js';
import { isKeelError } from '../../src/errors.js';
import { archiveParameters, pgbackrestPaths, shellWord } from '../../src/postgres/archiving.js';
import { buildPostgresqlConf, nodeLayout, streamOnlyLine, unquoteConfString } from '../../src/postgres/conf.js';
import { LocalLayout, placeholderSecrets } from '../../src/providers/local-layout.js';

const key = 'k'.repeat(40);

function config(backup: Record<string, unknown> | undefined, parameters?: Record<string, string>): NodeConfig {
  return nodeConfigSchema.parse({
    name: 'node2',
    cluster: 'geo',
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    api: { listen: '127.0.0.1:8008' },
    postgres: { dataDir: "/var/lib/keel/it's/node2/data", port: 5433, superuser: { password: 'pa:ss\\word1' }, replication: { password: 'replpass1' }, ...(parameters ? { parameters } : {}) },
    ...(backup === undefined ? {} : { backup }),
  });
}

const posix = { repo: { type: 'posix', path: '/srv/backup' }, cipherPass: key };

describe('node.yml backup block', () => {
  it('encrypts by default and then needs the key', () => {
    expect(config(posix).backup?.cipher).toBe('aes-256-cbc');
    expect(() => config({ repo: posix.repo })).toThrow(/cipherPass/);
    expect(config({ repo: posix.repo, cipher: 'none' }).backup?.cipherPass).toBeUndefined();
  });

  it('refuses archiving parameters beside it, and keeps them allowed without it', () => {
    expect(() => config(posix, { archive_command: '/bin/true' })).toThrow(/archive_command/);
    expect(() => config(posix, { restore_command: 'cp x y' })).toThrow(/restore_command/);
    expect(config(undefined, { archive_command: '/bin/true' }).postgres.parameters?.archive_command).toBe('/bin/true');
  });

  it('defaults archive_timeout to 60 s', () => {
    expect(config(posix).backup?.archiveTimeoutSeconds).toBe(60);
  });
});

describe('archiving settings in postgresql.conf', () => {
  it('archives with pgBackRest, naming the configuration directory and never the key', () => {
    const c = config({ ...posix, archiveTimeoutSeconds: 30 });
    const layout = nodeLayout(c);
    const conf = buildPostgresqlConf(c, layout, { replica: false, upstream: null, slotName: 'node2', parameters: {} }, '');
    const dir = pgbackrestPaths(layout).dir;
    expect(conf).toContain("archive_mode = 'on'");
    expect(conf).toContain("archive_timeout = '30s'");
    // the path holds a quote: shell-quoted, then quoted for postgresql.conf
    const command = /^archive_command = (.*)$/m.exec(conf)?.[1];
    expect(unquoteConfString(command!)).toBe(`/usr/bin/pgbackrest ${shellWord(`--config-path=${dir}`)} --stanza=geo archive-push "%p"`);
    expect(conf).toMatch(/^restore_command = '.*archive-get %f "%p"'$/m);
    expect(conf).not.toContain(key);
  });

  it("a standby following a switchover's target reads no archive until it is over: restore_command is emptied last", () => {
    const c = config(posix);
    const upstream = { name: 'node3', host: '127.0.0.1', port: 5503 };
    const following = buildPostgresqlConf(c, nodeLayout(c), { replica: true, upstream, slotName: 'node2', parameters: {}, shortRetry: true }, '');
    const restoreLines = following.split('\n').filter((l) => l.startsWith('restore_command'));
    expect(restoreLines).toHaveLength(2);
    expect(restoreLines.at(-1)).toBe(streamOnlyLine);
    const steady = buildPostgresqlConf(c, nodeLayout(c), { replica: true, upstream, slotName: 'node2', parameters: {} }, '');
    expect(steady).not.toContain(streamOnlyLine);
  });

  it('writes nothing about archiving without a backup block', () => {
    const c = config(undefined);
    expect(archiveParameters(c, nodeLayout(c))).toEqual([]);
  });

  it('quotes shell words that need it', () => {
    expect(shellWord('--stanza=main')).toBe('--stanza=main');
    expect(shellWord("a b'c")).toBe(`'a b'\\''c'`);
  });
});

describe('pgbackrest.conf', () => {
  it('holds the repository, its key, the spool and this node as pg1 over its local socket', () => {
    const c = config(posix);
    const layout = nodeLayout(c);
    const text = buildPgbackrestConf(c, layout);
    const paths = pgbackrestPaths(layout);
    expect(text).toContain('repo1-type=posix\nrepo1-path=/srv/backup\n');
    expect(text).toContain(`repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=${key}\n`);
    expect(text).toContain(`spool-path=${paths.spool}`);
    expect(text).toContain('[global:archive-push]\narchive-async=y');
    expect(text).toContain(`[geo]\npg1-path=${layout.dataDir}\npg1-port=5433\npg1-socket-path=${layout.socketDir}\npg1-user=postgres\n`);
  });

  it('names an S3 repository with its endpoint port and CA', () => {
    const c = config({ repo: { type: 's3', bucket: 'keel-backups', endpoint: '127.0.0.1:9443', region: 'eu-west-1', caFile: '/etc/keel/s3-ca.crt', key: 'AKIA', keySecret: 'sekrit' }, cipherPass: key });
    const text = buildPgbackrestConf(c, nodeLayout(c));
    expect(text).toContain('repo1-type=s3\nrepo1-path=/keel\nrepo1-s3-bucket=keel-backups\nrepo1-s3-endpoint=127.0.0.1\nrepo1-storage-port=9443\n');
    expect(text).toContain('repo1-storage-ca-file=/etc/keel/s3-ca.crt');
    expect(text).toContain('repo1-s3-key-secret=sekrit');
  });

  it('refuses a value with a line break, which would add an option', () => {
    const c = config(posix);
    const broken = { ...c, backup: { ...c.backup!, repo: { type: 'posix' as const, path: '/srv/x\nrepo1-path=/tmp' } } };
    let code: string | undefined;
    try {
      buildPgbackrestConf(broken, nodeLayout(c));
    } catch (err) {
      code = isKeelError(err) ? err.code : 'other';
    }
    expect(code).toBe('KEEL_CONFIG_INVALID');
  });

  it('gives pgBackRest the superuser password for any local socket, escaped for libpq', () => {
    expect(buildPgbackrestPgpass(config(posix))).toBe('*:*:*:postgres:pa\\:ss\\\\word1\n');
  });
});

describe('a local cluster node', () => {
  it('archives into DIR/backup with the cluster key', () => {
    const layout = new LocalLayout('/srv/keel');
    const c = layout.nodeConfig({ v: 1, cluster: 'keel', portBase: 6400, nodes: 3, synchronousMode: 'on' }, placeholderSecrets, 0);
    expect(c.backup).toMatchObject({ repo: { type: 'posix', path: '/srv/keel/backup' }, cipher: 'aes-256-cbc', cipherPass: placeholderSecrets.backupCipher });
    // what keel up writes parses back as it is
    expect(nodeConfigSchema.parse(JSON.parse(JSON.stringify(c))).backup).toEqual(c.backup);
  });

  it('makes a key, and refuses to make another for a repository whose key is gone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-layout-'));
    try {
      const layout = new LocalLayout(dir);
      const file = { v: 1 as const, cluster: 'keel', portBase: 6400, nodes: 1, synchronousMode: 'on' as const };
      const { secrets } = await layout.create(file);
      expect(secrets.backupCipher?.length).toBeGreaterThanOrEqual(32);
      const { backupCipher: _gone, ...rest } = secrets;
      writeFileSync(layout.secretsFile, JSON.stringify(rest));
      mkdirSync(join(layout.backupDir, 'archive'), { recursive: true });
      await expect(layout.create(file)).rejects.toMatchObject({ code: 'KEEL_BACKUP_KEY_MISSING' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
