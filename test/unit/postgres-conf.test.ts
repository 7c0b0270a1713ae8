import { describe, expect, it } from 'vitest';
import { nodeConfigSchema, type NodeConfig } from '../../src/config/schema.js';
import { isKeelError } from '../../src/errors.js';
import {
  buildConninfo,
  buildPgHba,
  buildPgpass,
  buildPostgresqlConf,
  nodeLayout,
  quoteConfString,
  readSynchronousStandbyNames,
  socketPath,
  unquoteConfString,
  validateParameters,
  withPromotionRetry,
  promotionRetryLine,
  streamOnlyLine,
  withSynchronousStandbyNames,
} from '../../src/postgres/conf.js';
import type { StartOptions } from '../../src/postgres/types.js';
import { toRuntimeState, type RuntimeRow } from '../../src/postgres/sql.js';

const superPassword = 'Sup3r:secret\\pw';
const replPassword = "r3pl'icat:ion";

function config(over: Partial<NodeConfig['postgres']> = {}): NodeConfig {
  return nodeConfigSchema.parse({
    name: 'node2',
    cluster: 'geo',
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    api: { listen: '127.0.0.1:8008' },
    postgres: {
      dataDir: '/var/lib/keel/node2/data',
      port: 5433,
      superuser: { password: superPassword },
      replication: { password: replPassword },
      ...over,
    },
  });
}

const upstream = { name: 'node1', host: '10.0.1.5', port: 5432 };
const replica: StartOptions = { replica: true, upstream, slotName: 'node2', parameters: {} };
const primary: StartOptions = { replica: false, upstream: null, slotName: 'node2', parameters: {} };

function setting(text: string, name: string): string | undefined {
  const lines = text.split('\n').filter((line) => line.startsWith(`${name} = `));
  return lines.at(-1)?.slice(name.length + 3);
}

function keelCode(run: () => unknown): string | undefined {
  try {
    run();
  } catch (err) {
    return isKeelError(err) ? err.code : 'not a KeelError';
  }
  return undefined;
}

describe('nodeLayout', () => {
  it('puts pgpass, log and socket in the node directory', () => {
    expect(nodeLayout(config())).toEqual({
      nodeDir: '/var/lib/keel/node2',
      dataDir: '/var/lib/keel/node2/data',
      pgpassPath: '/var/lib/keel/node2/pgpass',
      logPath: '/var/lib/keel/node2/postgres.log',
      socketDir: '/var/lib/keel/node2',
      socketDirIsFallback: false,
    });
  });

  it('honours postgres.socketDir', () => {
    expect(nodeLayout(config({ socketDir: '/run/keel' })).socketDir).toBe('/run/keel');
  });

  it('falls back to a short, stable directory when the socket path would pass 107 bytes', () => {
    const deep = `/var/tmp/${'k'.repeat(90)}/node2/data`;
    const layout = nodeLayout(config({ dataDir: deep }));
    expect(layout.socketDirIsFallback).toBe(true);
    expect(layout.socketDir).toMatch(/^\/tmp\/keel-[0-9a-f]{16}$/);
    expect(nodeLayout(config({ dataDir: deep })).socketDir).toBe(layout.socketDir);
    expect(socketPath(layout.socketDir, 65535).length).toBeLessThanOrEqual(107);
  });
});

describe('postgresql.conf', () => {
  const text = buildPostgresqlConf(config(), nodeLayout(config()), replica, 'node3');

  it('includes initdb’s conf first and sets the replication settings', () => {
    expect(text.startsWith('# Written by Keel')).toBe(true);
    expect(text.indexOf("include_if_exists = 'postgresql.base.conf'")).toBeLessThan(text.indexOf('wal_level'));
    expect(setting(text, 'listen_addresses')).toBe("'127.0.0.1'");
    expect(setting(text, 'port')).toBe('5433');
    expect(setting(text, 'unix_socket_directories')).toBe("'/var/lib/keel/node2'");
    expect(setting(text, 'cluster_name')).toBe("'geo-node2'");
    expect(setting(text, 'wal_level')).toBe("'replica'");
    expect(setting(text, 'hot_standby')).toBe('on');
    expect(setting(text, 'wal_log_hints')).toBe('on');
    expect(setting(text, 'max_wal_senders')).toBe('10');
    expect(setting(text, 'wal_keep_size')).toBe("'256MB'");
    expect(setting(text, 'password_encryption')).toBe("'scram-sha-256'");
    expect(setting(text, 'recovery_target_timeline')).toBe("'latest'");
    expect(setting(text, 'synchronous_standby_names')).toBe("'node3'");
    expect(text).not.toContain('shared_preload_libraries');
  });

  it('follows the upstream through the password file', () => {
    expect(setting(text, 'primary_conninfo')).toBe(
      "'host=10.0.1.5 port=5432 user=replicator application_name=node2 passfile=/var/lib/keel/node2/pgpass " +
        "connect_timeout=3 keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3'",
    );
    expect(setting(text, 'primary_slot_name')).toBe("'node2'");
  });

  it('clears the upstream for a primary', () => {
    const own = buildPostgresqlConf(config(), nodeLayout(config()), primary, '');
    expect(setting(own, 'primary_conninfo')).toBe("''");
    expect(setting(own, 'primary_slot_name')).toBe("''");
  });

  it('never holds a password', () => {
    for (const conf of [text, buildPgHba(config())]) {
      expect(conf).not.toContain(superPassword);
      expect(conf).not.toContain(replPassword);
      expect(conf).not.toMatch(/password\s*=/i);
    }
  });

  it('writes dynamic parameters after the defaults they may override, before the role settings', () => {
    const conf = buildPostgresqlConf(config(), nodeLayout(config()), { ...primary, parameters: { wal_keep_size: '1GB', max_connections: 200, jit: false, 'auto_explain.log_min_duration': '1s' } }, '');
    expect(setting(conf, 'wal_keep_size')).toBe("'1GB'");
    expect(setting(conf, 'max_connections')).toBe('200');
    expect(setting(conf, 'jit')).toBe('off');
    expect(setting(conf, 'auto_explain.log_min_duration')).toBe("'1s'");
    expect(conf.indexOf('max_connections')).toBeLessThan(conf.indexOf('listen_addresses'));
  });

  it('escapes a value that tries to end the string and inject a setting', () => {
    const conf = buildPostgresqlConf(config(), nodeLayout(config()), { ...primary, parameters: { application_name: "x'; y", search_path: 'a\\\'\nport = 1' } }, '');
    expect(setting(conf, 'application_name')).toBe("'x''; y'");
    expect(setting(conf, 'search_path')).toBe("'a\\\\''\\nport = 1'");
    expect(conf.split('\n').filter((line) => line.startsWith('port = '))).toEqual(['port = 5433']);
  });

  it.each([
    ["x'; y", 'not a parameter name'],
    ['Work_mem', 'not a parameter name'],
    ['work mem', 'not a parameter name'],
    ['__proto__', 'not a parameter name'],
    ['include', "Keel's own"],
    ['data_directory', "Keel's own"],
    ['port', "Keel's own"],
    ['primary_conninfo', "Keel's own"],
    ['synchronous_standby_names', "Keel's own"],
    ['wal_level', "Keel's own"],
  ])('rejects the parameter name %j', (name, reason) => {
    expect(() => validateParameters({ [name]: 'v' })).toThrow(reason);
    expect(keelCode(() => buildPostgresqlConf(config(), nodeLayout(config()), { ...primary, parameters: { [name]: 'v' } }, ''))).toBe('KEEL_CONFIG_INVALID');
  });

  it('caps the WAL a slot may hold at 8GB by default, and lets the cluster change it', () => {
    expect(setting(text, 'max_slot_wal_keep_size')).toBe("'8GB'");
    const own = buildPostgresqlConf(config(), nodeLayout(config()), { ...primary, parameters: { max_slot_wal_keep_size: '64GB' } }, '');
    expect(setting(own, 'max_slot_wal_keep_size')).toBe("'64GB'");
    expect(own.indexOf("max_slot_wal_keep_size = '64GB'")).toBeGreaterThan(own.indexOf("max_slot_wal_keep_size = '8GB'"));
  });

  it("writes node.yml's own parameters after the cluster's, and refuses Keel's own there too", () => {
    const withNode = config({ parameters: { archive_command: 'test ! -f /archive/%f && cp %p /archive/%f', shared_preload_libraries: 'pg_stat_statements', work_mem: '8MB' } });
    const conf = buildPostgresqlConf(withNode, nodeLayout(withNode), { ...primary, parameters: { work_mem: '64MB' } }, '');
    expect(setting(conf, 'archive_command')).toBe("'test ! -f /archive/%f && cp %p /archive/%f'");
    expect(setting(conf, 'shared_preload_libraries')).toBe("'pg_stat_statements'");
    expect(setting(conf, 'work_mem')).toBe("'8MB'");
    expect(conf.indexOf("work_mem = '8MB'")).toBeLessThan(conf.indexOf('listen_addresses'));
    expect(() => nodeConfigSchema.parse({ ...withNode, postgres: { ...withNode.postgres, parameters: { port: 1 } } })).toThrow("port is Keel's own");
    // a config built without the schema still cannot write Keel's own parameters
    const unchecked: NodeConfig = { ...config(), postgres: { ...config().postgres, parameters: { hba_file: '/tmp/x' } } };
    expect(keelCode(() => buildPostgresqlConf(unchecked, nodeLayout(unchecked), primary, ''))).toBe('KEEL_CONFIG_INVALID');
  });

  it('rejects control characters and non-finite numbers', () => {
    expect(keelCode(() => quoteConfString('a\u0000b'))).toBe('KEEL_CONFIG_INVALID');
    expect(keelCode(() => validateParameters({ work_mem: Number.NaN }))).toBe('KEEL_CONFIG_INVALID');
  });

  it('round-trips quoted strings', () => {
    for (const value of ['', 'plain', "it's", 'back\\slash', 'line\nbreak\ttab', `FIRST 1 ("node 2", 'x')`]) {
      expect(unquoteConfString(quoteConfString(value))).toBe(value);
    }
  });

  it('reads back and replaces only synchronous_standby_names', () => {
    const value = 'ANY 1 ("node1", node3)';
    const changed = withSynchronousStandbyNames(text, value);
    expect(readSynchronousStandbyNames(text)).toBe('node3');
    expect(readSynchronousStandbyNames(changed)).toBe(value);
    expect(changed.replace(/^synchronous_standby_names = .*$/m, '')).toBe(text.replace(/^synchronous_standby_names = .*$/m, ''));
    expect(readSynchronousStandbyNames("synchronous_standby_names = 'x'\n")).toBeNull(); // not Keel's file
    expect(withSynchronousStandbyNames('# other\n', 'a')).toBe("# other\nsynchronous_standby_names = 'a'\n");
  });

  it('puts the promotion retry interval last, where it wins, and takes it out again', () => {
    const on = withPromotionRetry(text, true);
    const lines = on.trimEnd().split('\n');
    expect(lines.at(-1)).toBe(promotionRetryLine);
    // the default stays in place above it: the later line wins in PostgreSQL
    expect(lines.filter((l) => l.startsWith('wal_retrieve_retry_interval')).length).toBe(2);
    expect(withPromotionRetry(on, true)).toBe(on);
    expect(withPromotionRetry(on, false)).toBe(text.replace(/\n*$/, '\n'));
    expect(withPromotionRetry(text, false)).toBe(text);
  });

  it('a switchover\'s promotion and the standbys following its target also run without restore_command, until it is over', () => {
    const on = withPromotionRetry(text, true, true);
    expect(on.trimEnd().split('\n').slice(-2)).toEqual([promotionRetryLine, streamOnlyLine]);
    expect(streamOnlyLine).toMatch(/^restore_command = ''/);
    expect(withPromotionRetry(on, true, true)).toBe(on);
    expect(withPromotionRetry(on, true)).toBe(withPromotionRetry(text, true));
    expect(withPromotionRetry(on, false)).toBe(text.replace(/\n*$/, '\n'));
  });
});

describe('connection strings', () => {
  it('quotes values only when needed', () => {
    expect(buildConninfo([['host', '/tmp/x y'], ['user', "o'neil"], ['port', 5432]])).toBe("host='/tmp/x y' user='o\\'neil' port=5432");
  });
});

const hbaLines = (c: NodeConfig): string[] =>
  buildPgHba(c)
    .split('\n')
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => line.split(/\s+/).join(' '));

const tlsFiles = { ca: '/etc/keel/ca.crt', cert: '/etc/keel/node.crt', key: '/etc/keel/node.key' };

function secured(): NodeConfig {
  return nodeConfigSchema.parse({
    name: 'node2',
    cluster: 'geo',
    etcd: { endpoints: ['https://10.0.1.9:2379'] },
    api: { listen: '10.0.1.6:8008' },
    tls: tlsFiles,
    postgres: {
      dataDir: '/var/lib/keel/node2/postgres/data',
      port: 5433,
      superuser: { password: superPassword },
      replication: { cert: '/etc/keel/replication.crt', key: '/etc/keel/replication.key' },
      rewind: { password: 'rewind-secret-0123' },
      app: { password: 'app-secret-0123456' },
      hba: { cluster: ['10.0.1.0/24'], applications: ['10.0.0.0/16'] },
    },
  });
}

describe('pg_hba.conf', () => {
  it('with TLS: hostssl only, replication by certificate, the superuser on the local socket alone', () => {
    expect(hbaLines(secured())).toEqual([
      'local all all scram-sha-256',
      'hostssl replication replicator 10.0.1.0/24 cert',
      'hostssl all postgres all reject',
      'hostssl postgres keel_rewind 10.0.1.0/24 scram-sha-256',
      'hostssl all keel_rewind all reject',
      'hostssl all replicator all reject',
      'hostssl all all 10.0.0.0/16 scram-sha-256',
      'hostnossl all all all reject',
    ]);
  });

  it('without TLS: scram-sha-256 over TCP, only from the configured ranges', () => {
    expect(hbaLines(config())).toEqual([
      'local all all scram-sha-256',
      'host replication replicator 127.0.0.1/32 scram-sha-256',
      'host replication replicator ::1/128 scram-sha-256',
      'host all replicator all reject',
      'host all all 127.0.0.1/32 scram-sha-256',
      'host all all ::1/128 scram-sha-256',
    ]);
  });

  it('refuses an address range that is not one', () => {
    for (const range of ['10.0.0.0', '10.0.0.0/33', 'all', '0.0.0.0/0 trust', '::1/129']) {
      expect(() => nodeConfigSchema.parse({ ...secured(), postgres: { ...secured().postgres, hba: { cluster: [range], applications: ['10.0.0.0/8'] } } })).toThrow();
    }
  });
});

describe('TLS settings', () => {
  it('turns ssl on with the node certificate and asks verify-full of every connection to another node', () => {
    const c = secured();
    const conf = buildPostgresqlConf(c, nodeLayout(c), replica, '');
    expect(conf).toMatch(/^ssl = on$/m);
    expect(conf).toMatch(/^ssl_cert_file = '\/etc\/keel\/node.crt'$/m);
    expect(conf).toMatch(/^ssl_ca_file = '\/etc\/keel\/ca.crt'$/m);
    const conninfo = /^primary_conninfo = '(.*)'$/m.exec(conf)?.[1] ?? '';
    expect(conninfo).toContain('sslmode=verify-full');
    expect(conninfo).toContain('sslrootcert=/etc/keel/ca.crt');
    expect(conninfo).toContain('sslcert=/etc/keel/replication.crt');
    expect(conninfo).toContain('sslkey=/etc/keel/replication.key');
  });

  it('keeps ssl off and no sslmode without a tls block', () => {
    const c = config();
    const conf = buildPostgresqlConf(c, nodeLayout(c), replica, '');
    expect(conf).toMatch(/^ssl = off$/m);
    expect(conf).not.toContain('sslmode');
  });

  it('gives pg_rewind its own role in the password file, and no replication password when a certificate logs in', () => {
    const lines = buildPgpass(secured(), upstream).split('\n').filter((line) => line && !line.startsWith('#'));
    expect(lines).toEqual(['10.0.1.5:5432:*:keel_rewind:rewind-secret-0123']);
  });
});

describe('pgpass', () => {
  it('holds both passwords for the upstream, escaped', () => {
    const lines = buildPgpass(config(), upstream).split('\n').filter((line) => line && !line.startsWith('#'));
    expect(lines).toEqual([
      "10.0.1.5:5432:*:replicator:r3pl'icat\\:ion",
      '10.0.1.5:5432:*:postgres:Sup3r\\:secret\\\\pw',
    ]);
  });

  it('holds no password without an upstream', () => {
    expect(buildPgpass(config(), null)).toBe('# Written by Keel; Keel rewrites this file.\n');
  });

  it('refuses a password with a line break rather than write a broken file', () => {
    const broken = config({ replication: { username: 'replicator', password: 'two\nlines!' } });
    expect(keelCode(() => buildPgpass(broken, upstream))).toBe('KEEL_CONFIG_INVALID');
  });
});

describe('toRuntimeState', () => {
  const row: RuntimeRow = {
    in_recovery: true,
    wal_lsn: null,
    primary_timeline: null,
    received_lsn: '0/5000000',
    replayed_lsn: '0/4FFFF00',
    checkpoint_timeline: 1,
    receiver_status: 'streaming',
    received_tli: 2,
    sender_host: '10.0.1.5',
    sender_port: 5432,
    replicas: [],
    slots: [],
    primary_conninfo: 'host=10.0.1.5',
    primary_slot_name: 'node2',
    synchronous_standby_names: '',
    retry_interval: '17ms',
    server_version_num: 150012,
    postmaster_start_seconds: 1724873966.35,
    replay_paused: false,
    replayed_xact_seconds: null,
  };

  it('carries what /metrics shows of the server: its version, start time, whether replay is paused', () => {
    expect(toRuntimeState(row)).toMatchObject({ serverVersionNum: 150012, postmasterStartSeconds: 1724873966.35, replayPaused: false, replayedXactSeconds: null });
  });

  it('reads the WAL retry interval as SHOW gives it', () => {
    expect(toRuntimeState(row).walRetrieveRetryMs).toBe(17);
    expect(toRuntimeState({ ...row, retry_interval: '1s' }).walRetrieveRetryMs).toBe(1000);
    expect(toRuntimeState({ ...row, retry_interval: '5min' }).walRetrieveRetryMs).toBe(300_000);
  });

  it('takes a replica’s timeline from its WAL receiver, else from its last checkpoint', () => {
    expect(toRuntimeState(row)).toMatchObject({ timeline: 2, streaming: true, receivedLsn: 0x5000000, upstreamPort: 5432 });
    expect(toRuntimeState({ ...row, received_tli: null, receiver_status: null })).toMatchObject({ timeline: 1, streaming: false });
  });

  it('takes a primary’s timeline from its current WAL file', () => {
    const state = toRuntimeState({
      ...row,
      in_recovery: false,
      wal_lsn: '0/6000060',
      primary_timeline: 3,
      received_lsn: null,
      replayed_lsn: null,
      replicas: [{ applicationName: 'node2', flushLsn: '0/6000000', state: 'streaming', syncState: 'sync' }],
    });
    expect(state).toMatchObject({ inRecovery: false, timeline: 3, walLsn: 0x6000060, streaming: false, upstreamHost: null });
    expect(state.replicas).toEqual([{ applicationName: 'node2', flushLsn: 0x6000000, state: 'streaming', syncState: 'sync' }]);
  });
});
