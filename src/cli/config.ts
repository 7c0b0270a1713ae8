import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import { applyConfigPatch, patchFromAssignments } from '../config/patch.js';
import { defaultDynamicConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import { resolveTarget, withTargetOptions, type TargetOptions } from './target.js';

export function registerConfig(program: Command): void {
  const config = program.command('config').description('the cluster-wide dynamic settings kept in etcd');
  const withTarget = (cmd: Command) =>
    withTargetOptions(cmd);

  withTarget(config.command('show').description('print the settings (defaults where unset)').option('--json', 'JSON instead of YAML')).action(
    async (options: TargetOptions & { json?: boolean }) => {
      const target = resolveTarget(options);
      try {
        const value = (await target.dcs.readCluster()).config?.value ?? defaultDynamicConfig;
        process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : toYaml(value));
      } finally {
        await target.dcs.close();
      }
    },
  );

  withTarget(
    config
      .command('set')
      .description('change settings with a compare-and-swap, e.g. `keel config set synchronous_mode=on ttl=20 postgresql_parameters.work_mem=64MB`')
      .argument('<key=value...>', 'settings to change; key=null restores the default'),
  ).action(async (assignments: string[], options: TargetOptions) => {
    const patch = patchFromAssignments(assignments);
    const target = resolveTarget(options);
    try {
      const stored = (await target.dcs.readCluster()).config;
      const next = applyConfigPatch(stored?.value ?? defaultDynamicConfig, patch);
      if (!(await target.dcs.putConfig(next, stored?.modRevision ?? null))) {
        throw new KeelError('KEEL_CONFLICT', 'the config changed while this command ran; nothing was written');
      }
      process.stdout.write(`updated: ${Object.keys(patch).join(', ')}\n`);
    } finally {
      await target.dcs.close();
    }
  });
}
