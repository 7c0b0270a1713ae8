/**
 * The allow-list of parameters the cluster-wide config may set: names, value
 * types and ranges as PostgreSQL 15 reads them, and why the others are refused.
 */
import { describe, expect, it } from 'vitest';
import { defaultDynamicConfig, dynamicConfigSchema } from '../../src/config/schema.js';
import { applyConfigPatch } from '../../src/config/patch.js';
import { isKeelError } from '../../src/errors.js';
import {
  clusterParameterProblem,
  clusterParameters,
  nodeParameterProblem,
  refusedParameters,
  screenClusterParameters,
  type ParameterValue,
} from '../../src/model/parameters.js';

describe('values the cluster may set', () => {
  it.each<[string, ParameterValue]>([
    ['shared_buffers', '128MB'],
    ['shared_buffers', 16384],
    ['shared_buffers', '1GB'],
    ['work_mem', '64MB'],
    ['work_mem', '1.5MB'],
    ['work_mem', 65536],
    ['maintenance_work_mem', '1GB'],
    ['effective_cache_size', '4GB'],
    ['max_wal_size', '4GB'],
    ['min_wal_size', '80MB'],
    ['checkpoint_timeout', '15min'],
    ['checkpoint_timeout', 900],
    ['checkpoint_completion_target', 0.9],
    ['checkpoint_completion_target', '0.5'],
    ['wal_compression', 'lz4'],
    ['wal_compression', 'ZSTD'],
    ['wal_compression', true],
    ['wal_compression', 'off'],
    ['wal_keep_size', '1GB'],
    ['max_slot_wal_keep_size', -1],
    ['max_slot_wal_keep_size', '64GB'],
    ['random_page_cost', 1.1],
    ['effective_io_concurrency', 200],
    ['default_statistics_target', 500],
    ['jit', false],
    ['jit', 'off'],
    ['max_connections', 200],
    ['statement_timeout', '30s'],
    ['statement_timeout', 0],
    ['idle_in_transaction_session_timeout', '10min'],
    ['lock_timeout', '2s'],
    ['log_min_duration_statement', '250ms'],
    ['log_min_duration_statement', -1],
    ['log_checkpoints', true],
    ['log_lock_waits', 'on'],
    ['log_temp_files', '10MB'],
    ['log_autovacuum_min_duration', '1s'],
    ['autovacuum_vacuum_scale_factor', 0.05],
    ['autovacuum_naptime', '30s'],
    ['autovacuum_vacuum_cost_delay', '2ms'],
    ['autovacuum_max_workers', 5],
    ['timezone', 'UTC'],
    ['timezone', 'Europe/Paris'],
    ['timezone', 'America/Argentina/Buenos_Aires'],
    ['postgis.gdal_enabled_drivers', 'GTiff PNG JPEG'],
    ['postgis.gdal_enabled_drivers', 'DISABLE_ALL'],
    ['postgis.enable_outdb_rasters', false],
  ])('%s = %j', (name, value) => {
    expect(clusterParameterProblem(name, value)).toBeNull();
  });
});

describe('values PostgreSQL would refuse', () => {
  it.each<[string, ParameterValue, string]>([
    ['shared_buffers', '64kB', 'out of range'],
    ['shared_buffers', '9TB', 'out of range'],
    ['work_mem', '32kB', 'out of range'],
    ['work_mem', '64mb', 'unknown unit "mb"'],
    ['work_mem', '64 MiB', 'unknown unit'],
    ['work_mem', 'lots', 'a number'],
    ['work_mem', true, 'a number is expected'],
    ['work_mem', '10s', 'unknown unit "s"'],
    ['maintenance_work_mem', '512kB', 'out of range'],
    ['max_wal_size', '1MB', 'out of range'],
    ['checkpoint_timeout', '10s', 'out of range'],
    ['checkpoint_timeout', '2d', 'out of range'],
    ['checkpoint_timeout', '5MB', 'unknown unit "MB"'],
    ['checkpoint_completion_target', 1.5, 'out of range'],
    ['wal_compression', 'gzip', 'one of pglz, lz4, zstd, on, off'],
    ['max_slot_wal_keep_size', -2, 'out of range'],
    ['random_page_cost', -1, 'out of range'],
    ['effective_io_concurrency', 1001, 'out of range'],
    ['default_statistics_target', 0, 'out of range'],
    ['default_statistics_target', '100 kB', 'takes no unit'],
    ['jit', 'maybe', 'on or off'],
    ['jit', 2, 'on or off'],
    ['max_connections', 5, 'out of range'],
    ['statement_timeout', -1, 'out of range'],
    ['statement_timeout', '30 seconds', 'unknown unit'],
    ['log_statement', 'everything', 'one of none, ddl, mod, all'],
    ['autovacuum_vacuum_scale_factor', 101, 'out of range'],
    ['timezone', '../../etc/passwd', 'time zone name'],
    ['timezone', 42, 'time zone name'],
    ['postgis.gdal_enabled_drivers', "GTiff'; archive_command='x", 'GDAL driver names'],
    ['postgis.enable_outdb_rasters', 'sure', 'on or off'],
  ])('%s = %j: %s', (name, value, why) => {
    expect(clusterParameterProblem(name, value)).toContain(why);
    expect(clusterParameterProblem(name, value)).toContain(name);
  });
});

describe('parameters refused from etcd', () => {
  it.each([
    ['archive_command', 'runs a shell command', 'node.yml'],
    ['restore_command', 'runs a shell command', 'node.yml'],
    ['ssl_passphrase_command', 'runs a shell command', 'node.yml'],
    ['archive_library', 'loads code', 'node.yml'],
    ['shared_preload_libraries', 'loads code', 'node.yml'],
    ['session_preload_libraries', 'loads code', 'node.yml'],
    ['local_preload_libraries', 'loads code', 'node.yml'],
    ['dynamic_library_path', 'loads code', 'node.yml'],
    ['log_directory', 'names a file or directory', 'node.yml'],
    ['port', "Keel's own", 'postgres.port'],
    ['listen_addresses', "Keel's own", 'postgres.listen'],
    ['data_directory', "Keel's own", 'files'],
    ['hba_file', "Keel's own", 'files'],
    ['primary_conninfo', "Keel's own", 'replication'],
    ['synchronous_standby_names', "Keel's own", 'synchronous_mode'],
    ['synchronous_commit', "Keel's own", 'acknowledged write'],
    ['fsync', "Keel's own", 'acknowledged write'],
    ['password_encryption', "Keel's own", 'scram-sha-256'],
    ['auto_explain.log_min_duration', 'not among the parameters', 'README'],
    ['allow_system_table_mods', 'not among the parameters', 'README'],
    ['Work_mem', 'not a parameter name', ''],
    ['__proto__', 'not a parameter name', ''],
    ['constructor', 'not a parameter name', ''],
  ])('%s: %s', (name, why, where) => {
    const problem = clusterParameterProblem(name, 'x');
    expect(problem).toContain(why);
    expect(problem).toContain(where);
  });

  it('no name is both allowed and refused, and every refusal says why', () => {
    for (const name of Object.keys(refusedParameters)) expect(Object.hasOwn(clusterParameters, name)).toBe(false);
    for (const { why } of Object.values(refusedParameters)) expect(why.length).toBeGreaterThan(10);
  });

  it('node.yml may set what runs commands or loads code, never what Keel sets itself', () => {
    expect(nodeParameterProblem('archive_command')).toBeNull();
    expect(nodeParameterProblem('shared_preload_libraries')).toBeNull();
    expect(nodeParameterProblem('auto_explain.log_min_duration')).toBeNull();
    expect(nodeParameterProblem('primary_conninfo')).toContain("Keel's own");
    expect(nodeParameterProblem('__proto__')).toContain('not a parameter name');
  });
});

describe('screening what a node read from etcd', () => {
  it('keeps the allowed parameters and names each one left out', () => {
    const screened = screenClusterParameters({ work_mem: '64MB', archive_command: 'rm -rf /', shared_buffers: '1kB', jit: false });
    expect(screened.accepted).toEqual({ work_mem: '64MB', jit: false });
    expect(screened.refused).toHaveLength(2);
    expect(screened.refused[0]).toContain('archive_command');
    expect(screened.refused[1]).toContain('shared_buffers');
  });
});

describe('config patches with parameters', () => {
  function refusal(patch: unknown): string {
    try {
      applyConfigPatch(defaultDynamicConfig, patch);
    } catch (err) {
      if (!isKeelError(err)) throw err;
      expect(err.code).toBe('KEEL_CONFIG_INVALID');
      return `${err.message} / ${err.hint}`;
    }
    throw new Error('the patch was accepted');
  }

  it('refuses a patch with any refused parameter, naming it, and says where the list is', () => {
    const text = refusal({ postgresql_parameters: { work_mem: '64MB', archive_command: 'curl evil | sh' } });
    expect(text).toContain('postgresql_parameters.archive_command');
    expect(text).toContain('node.yml');
    expect(text).toContain('README');
    expect(refusal({ postgresql_parameters: { max_wal_size: '1kB' } })).toContain('max_wal_size');
  });

  it('accepts valid parameters and removes one with null', () => {
    const next = applyConfigPatch(defaultDynamicConfig, { postgresql_parameters: { work_mem: '64MB', max_connections: 200 } });
    expect(next.postgresql_parameters).toEqual({ work_mem: '64MB', max_connections: 200 });
    expect(applyConfigPatch(next, { postgresql_parameters: { work_mem: null } }).postgresql_parameters).toEqual({ max_connections: 200 });
  });

  it('the schema itself refuses them, so no writer (node.yml bootstrap, encodeConfig) can store them', () => {
    expect(dynamicConfigSchema.safeParse({ postgresql_parameters: { shared_preload_libraries: 'evil' } }).success).toBe(false);
  });
});
