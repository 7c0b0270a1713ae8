import { Command, CommanderError } from 'commander';
import { isKeelError, KeelError, redactSecrets } from '../errors.js';
type Register = (program: Command) => void;

/**
 * Each top-level command and the module that registers it, loaded only when
 * needed: a daemon (`keel agent`, `keel router`) then holds its own code in
 * memory, not the AWS SDK, the dashboard or the restore tooling.
 */
const commandModules: [names: string[], load: () => Promise<Register[]>][] = [
  [['up'], async () => [(await import('./up.js')).registerUp]],
  [['down'], async () => [(await import('./up.js')).registerDown]],
  [['status'], async () => [(await import('./status.js')).registerStatus]],
  [['switchover', 'failover'], async () => [(await import('./switchover.js')).registerSwitchover]],
  [['config'], async () => [(await import('./config.js')).registerConfig]],
  [['agent'], async () => [(await import('./agent.js')).registerAgent]],
  [['guard'], async () => [(await import('./guard.js')).registerGuard]],
  [['router'], async () => [(await import('./router.js')).registerRouter]],
  [['controller'], async () => [(await import('./controller.js')).registerController, (await import('./controller-metrics.js')).addControllerMetrics]],
  [['spec', 'scale'], async () => [(await import('./spec.js')).registerSpec]],
  [['events'], async () => [(await import('./events.js')).registerEvents]],
  [['autoscale'], async () => [(await import('./autoscale.js')).registerAutoscale]],
  [['dashboard'], async () => [(await import('./dashboard.js')).registerDashboard]],
  [['certs'], async () => [(await import('./certs.js')).registerCerts]],
  [['backup'], async () => [(await import('./backup.js')).registerBackup]],
  [['restore'], async () => [(await import('./restore.js')).registerRestore]],
  [['aws'], async () => [(await import('./aws.js')).registerAws]],
  [['demo'], async () => [(await import('./demo.js')).registerDemo]],
];

/**
 * node-postgres probes for Cloudflare's runtime when it loads by constructing a
 * `Response`, and on Node 20 that global loads undici and compiles its HTTP
 * parser to WebAssembly: 3-7 MB of resident memory in every process, for a
 * fetch no daemon makes. The global is hidden only while commands load.
 */
async function withoutResponseGlobal<T>(load: () => Promise<T>): Promise<T> {
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, 'Response');
  if (descriptor?.configurable !== true) return load();
  delete (globalThis as { Response?: unknown }).Response;
  try {
    return await load();
  } finally {
    Object.defineProperty(globalThis, 'Response', descriptor);
  }
}

/** The program with every command, or with only `command`'s when it names one (help and unknown commands get them all). */
export async function buildProgram(command?: string): Promise<Command> {
  const program = new Command('keel')
    .description('PostgreSQL + PostGIS clusters that heal themselves, coordinated by etcd')
    .exitOverride()
    // Errors are printed once, with their KEEL_* code, by main().
    .configureOutput({ outputError: () => undefined });
  const only = commandModules.find(([names]) => command !== undefined && names.includes(command));
  for (const [, load] of only === undefined ? commandModules : [only]) {
    for (const register of await withoutResponseGlobal(load)) register(program);
  }
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
  try {
    const program = await buildProgram(argv[2]);
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
