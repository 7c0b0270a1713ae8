import { Command, CommanderError } from 'commander';
import { isKeelError, KeelError, redactSecrets } from '../errors.js';
import { registerAgent } from './agent.js';
import { registerAutoscale } from './autoscale.js';
import { registerAws } from './aws.js';
import { registerBackup } from './backup.js';
import { registerRestore } from './restore.js';
import { registerCerts } from './certs.js';
import { registerDashboard } from './dashboard.js';
import { registerController } from './controller.js';
import { addControllerMetrics } from './controller-metrics.js';
import { registerEvents } from './events.js';
import { registerGuard } from './guard.js';
import { registerSpec } from './spec.js';
import { registerDemo } from './demo.js';
import { registerConfig } from './config.js';
import { registerRouter } from './router.js';
import { registerDown, registerUp } from './up.js';
import { registerStatus } from './status.js';
import { registerSwitchover } from './switchover.js';

export function buildProgram(): Command {
  const program = new Command('keel')
    .description('PostgreSQL + PostGIS clusters that heal themselves, coordinated by etcd')
    .exitOverride()
    // Errors are printed once, with their KEEL_* code, by main().
    .configureOutput({ outputError: () => undefined });
  registerUp(program);
  registerDown(program);
  registerStatus(program);
  registerSwitchover(program);
  registerConfig(program);
  registerAgent(program);
  registerGuard(program);
  registerRouter(program);
  registerController(program);
  addControllerMetrics(program);
  registerSpec(program);
  registerEvents(program);
  registerAutoscale(program);
  registerDashboard(program);
  registerCerts(program);
  registerBackup(program);
  registerRestore(program);
  registerAws(program);
  registerDemo(program);
  return program;
}

/**
 * grpc-js (under the etcd client) puts the host it connects to into TLS's SNI even when it is an IP
 * address, as etcd endpoints usually are, and Node reports that once per process (DEP0123). etcd's
 * certificate is still checked against the address: the warning would only clutter every command's output.
 */
function ignoreIpServerNameWarning(): void {
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const options = rest[0];
    const code = typeof options === 'object' && options !== null ? (options as { code?: unknown }).code : rest[1];
    if (code !== 'DEP0123') emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

/** Runs the CLI; returns the exit status. Usage and configuration errors exit with 2. */
export async function main(argv: string[]): Promise<number> {
  ignoreIpServerNameWarning();
  // Keel pins an AWS SDK that supports the Node.js it runs on: the SDK's notice about its future majors is not the operator's to act on
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return 0;
      const usage = new KeelError('KEEL_USAGE', err.message.replace(/^error: /, ''));
      process.stderr.write(`${usage.render()}\n`);
      return 2;
    }
    if (isKeelError(err)) {
      process.stderr.write(`${err.render()}\n`);
      return err.exitStatus;
    }
    process.stderr.write(`keel: ${redactSecrets(err instanceof Error ? (err.stack ?? err.message) : String(err))}\n`);
    return 1;
  }
}
