/**
 * Running pgBackRest as PostgreSQL's OS user, either with a node's own
 * configuration (files.ts wrote it) or, for a repository alone, with no
 * configuration file and the key in the environment (never on a command line,
 * which every user of the machine can read).
 */
import { basename, dirname, join } from 'node:path';
import type { BackupRepo } from '../config/backup.js';
import type { NodeConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import { pgbackrestPaths, stanzaOf, type PgbackrestPaths } from '../postgres/archiving.js';
import { nodeLayout } from '../postgres/conf.js';
import { Programs, resolveRunAs, writeOwnedFile, type RunAs } from '../postgres/programs.js';
import { confOption, repoOptions } from './conf.js';
import { parseInfo, pgbackrestErrors, type StanzaInfo } from './info.js';

export interface PgbackrestRunOptions {
  /** each chunk of output as it comes */
  onOutput?: (text: string) => void;
  /** stops pgBackRest (SIGTERM): it ends its backup and removes its lock */
  signal?: AbortSignal;
  /** the command's own parameters, after its name (archive-push's WAL file) */
  parameters?: string[];
}

/** What runs pgBackRest: where its configuration comes from and which OS user it runs as. */
interface Invocation {
  programs: Programs;
  program: string;
  /** the options every command gets first */
  head: string[];
  env: Record<string, string>;
}

/** pgBackRest could not take its lock: another of its processes (the asynchronous push) holds it for now. */
export function isLockBusy(message: string): boolean {
  return /unable to acquire lock/.test(message);
}

export class Pgbackrest {
  private constructor(
    private readonly invocation: Invocation,
    /** null: commands that span the repository's stanzas (info of them all) */
    readonly stanza: string | null,
    /** the node's files, when it runs with a node's configuration */
    readonly paths: PgbackrestPaths | null,
  ) {}

  /** With node `config`'s pgbackrest.conf: its repository and key, the node as pg1. */
  static forNode(config: NodeConfig): Pgbackrest {
    const backup = config.backup;
    if (backup === undefined) {
      throw new KeelError('KEEL_BACKUP_UNCONFIGURED', `node ${config.name} of cluster ${config.cluster} has no backup block in its node.yml`);
    }
    const layout = nodeLayout(config);
    const paths = pgbackrestPaths(layout);
    const invocation: Invocation = {
      programs: new Programs(dirname(backup.binary), resolveRunAs(config), layout.nodeDir),
      program: basename(backup.binary),
      head: [`--config-path=${paths.dir}`],
      env: { PGPASSFILE: paths.pgpass },
    };
    return new Pgbackrest(invocation, stanzaOf(config), paths);
  }

  /**
   * A repository alone (info, restore): its options and key in a configuration file of its own, 0600
   * in `scratch`, a directory of PostgreSQL's OS user that also holds pgBackRest's lock, spool and
   * log. A restore names that file in the restore_command it writes: `scratch` lives until the
   * recovery is over.
   */
  static async forRepository(options: { repo: BackupRepo; cipherPass: string | null; stanza: string | null; runAs: RunAs | null; scratch: string; binary?: string }): Promise<Pgbackrest> {
    const binary = options.binary ?? '/usr/bin/pgbackrest';
    const conf = join(options.scratch, 'pgbackrest.conf');
    const cipher: [string, string][] = options.cipherPass === null ? [['repo1-cipher-type', 'none']] : [['repo1-cipher-type', 'aes-256-cbc'], ['repo1-cipher-pass', options.cipherPass]];
    const lines: [string, string | number][] = [...repoOptions(options.repo), ...cipher, ['lock-path', options.scratch], ['spool-path', options.scratch], ['log-path', options.scratch], ['log-level-file', 'off']];
    await writeOwnedFile(conf, `${['[global]', ...lines.map(([name, value]) => confOption(name, value))].join('\n')}\n`, 0o600, options.runAs);
    const invocation: Invocation = {
      programs: new Programs(dirname(binary), options.runAs, options.scratch),
      program: basename(binary),
      head: [`--config=${conf}`],
      env: {},
    };
    return new Pgbackrest(invocation, options.stanza, null);
  }

  /** Runs one command; throws KEEL_BACKUP_FAILED with pgBackRest's own error lines. */
  async run(command: string, args: string[] = [], options: PgbackrestRunOptions = {}): Promise<string> {
    const { programs, program, head, env } = this.invocation;
    const stanza = this.stanza === null ? [] : [`--stanza=${this.stanza}`];
    const result = await programs.run(program, [...head, ...stanza, ...args, command, ...(options.parameters ?? [])], { env, allowFailure: true, onOutput: options.onOutput, signal: options.signal }).catch((err: unknown) => {
      if (options.signal?.aborted) return { exitCode: null, output: '' };
      throw err;
    });
    if (options.signal?.aborted) throw new KeelError('KEEL_BACKUP_FAILED', `pgbackrest ${command} was stopped`);
    if (result.exitCode !== 0) {
      const errors = pgbackrestErrors(result.output) || result.output.trim().split('\n').slice(-3).join('\n');
      throw new KeelError('KEEL_BACKUP_FAILED', `pgbackrest ${command} failed (exit status ${result.exitCode}):\n${errors}`);
    }
    return result.output;
  }

  /** The stanza as the repository knows it (status, backups, archive range). */
  async info(): Promise<StanzaInfo> {
    const output = await this.run('info', ['--output=json']);
    const stanza = parseInfo(output).find((s) => s.name === this.stanza);
    if (stanza === undefined) throw new KeelError('KEEL_BACKUP_FAILED', `pgbackrest info said nothing of stanza ${this.stanza}`);
    return stanza;
  }

  /** Every stanza the repository holds (a repository used without a stanza). */
  async stanzas(): Promise<StanzaInfo[]> {
    return parseInfo(await this.run('info', ['--output=json']));
  }

  /** Creates the stanza, or checks that the one there belongs to this database; safe to run again. */
  async stanzaCreate(): Promise<void> {
    await this.run('stanza-create');
  }

  /** Checks the repository and that a WAL switch reaches it through archive_command (on a primary). */
  async check(): Promise<void> {
    await this.run('check');
  }
}
