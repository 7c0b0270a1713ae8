import type { Command } from 'commander';

export function registerGuard(program: Command): void {
  program
    .command('guard')
    .description("run a node's fencing guard: stops PostgreSQL when the agent stops feeding it lease deadlines")
    .requiredOption('--config <file>', 'node configuration (YAML) with a guard block')
    .option('--hardware-watchdog <path>', 'also keep this watchdog device (e.g. /dev/watchdog) alive while fed; overrides guard.hardwareWatchdog')
    .action(async (options: { config: string; hardwareWatchdog?: string }) => {
      // loaded on use: the guard's code needs nothing else of the CLI
      const { runGuard } = await import('../guard/run.js');
      await runGuard({ config: options.config, hardwareWatchdog: options.hardwareWatchdog });
    });
}
