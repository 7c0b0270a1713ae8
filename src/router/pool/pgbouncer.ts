/**
 * Debian's PgBouncer as a child of the router: its files in a private run
 * directory (0700, owned by the OS user it runs as: PgBouncer refuses root),
 * its admin console on a unix socket there, reached as a user only the router
 * knows. Like HAProxy it runs under a small shell that reads our end of a
 * pipe, so a router that dies, even by SIGKILL, leaves no PgBouncer behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { KeelError, redactSecrets } from '../../errors.js';
import { sleep } from '../../util/clock.js';
import { stopGuarded, watchChild } from '../../util/child-watch.js';
import type { Logger } from '../../util/log.js';
import { isPortFree } from '../../util/ports.js';
import { readPidFile } from '../../util/process.js';
import { ensureDirNoFollow } from '../../util/safe-dir.js';
import { writeFileNoFollow, type FileOwner } from '../../util/safe-file.js';
import type { Backend } from '../route.js';
import { pgbouncerIni, poolAdminUser, userlist, type PoolConfigInput, type PoolLogin } from './config.js';

export const defaultPgbouncerBinary = '/usr/sbin/pgbouncer';
const startTimeoutMs = 10_000;

const guardScript = [
  'exec 3<&0',
  '"$0" "$@" </dev/null 3<&- &',
  'pid=$!',
  'exec </dev/null >/dev/null 2>&1',
  '{ read _ <&3; kill -TERM "$pid"; } &',
  'reader=$!',
  'wait "$pid"; status=$?',
  'kill "$reader"',
  'case "$KEEL_RUN_DIR" in */keel-pgbouncer-*) rm -rf "$KEEL_RUN_DIR" ;; esac',
  'exit "$status"',
].join('\n');

export interface PgbouncerOptions {
  binary: string;
  listen: { host: string; port: number };
  databases: string[];
  /** the certificate clients see, its key, and the CA PostgreSQL's certificates are checked against */
  tls: { cert: string; key: string; ca: string };
  logins: PoolLogin[];
  /** the OS user PgBouncer runs as; null: this process's own */
  runAs: FileOwner | null;
  maxClientConnections: number;
  poolSize: number;
  connectTimeoutMs: number;
  queryWaitTimeoutMs: number;
  /** called when PgBouncer exits on its own */
  onExit: (detail: string) => void;
}

export class Pgbouncer {
  private dir: string | null = null;
  private child: ChildProcess | null = null;
  private pid: number | null = null;
  private stopping = false;
  private readonly adminPassword = randomBytes(24).toString('base64url');
  /** one admin console connection, kept: a login costs a switchover's pause tens of ms on a busy machine */
  private adminSession: Promise<pg.Client> | null = null;

  constructor(
    private readonly options: PgbouncerOptions,
    private readonly logger: Logger,
  ) {}

  get processId(): number | null {
    return this.pid;
  }

  private get runDir(): string {
    if (this.dir === null) throw new KeelError('KEEL_POOL_FAILED', 'PgBouncer is not started');
    return this.dir;
  }

  private file(name: string): string {
    return join(this.runDir, name);
  }

  async start(): Promise<void> {
    await access(this.options.binary, constants.X_OK).catch(() => {
      throw new KeelError('KEEL_BINARY_MISSING', `PgBouncer is not installed at ${this.options.binary}`, { hint: 'apt-get install -y pgbouncer (or run `make setup`), or give --pgbouncer its path' });
    });
    const { host, port } = this.options.listen;
    if (!(await isPortFree(host, port))) {
      throw new KeelError('KEEL_PORT_IN_USE', `the pooled rw address ${host}:${port} is already in use`, { hint: 'stop what listens there, or give --pool another address' });
    }
    this.dir = await mkdtemp(join(tmpdir(), 'keel-pgbouncer-'));
    try {
      await ensureDirNoFollow(this.dir, 0o700, this.options.runAs);
      await this.copyTlsFiles();
      await writeFileNoFollow(this.file('userlist.txt'), userlist(this.options.logins, this.adminPassword), 0o600, this.options.runAs);
      await this.writeIni(null);
      await this.spawnAndWait();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Copies the certificate, key and CA where PgBouncer's user may read them: the originals stay Keel's. */
  private async copyTlsFiles(): Promise<void> {
    const files = [['server.crt', this.options.tls.cert], ['server.key', this.options.tls.key], ['ca.crt', this.options.tls.ca]] as const;
    // all read before any is replaced: a half-renewed pair is never put in place
    const data = await Promise.all(
      files.map(([, from]) =>
        readFile(from).catch((err: NodeJS.ErrnoException) => {
          throw new KeelError('KEEL_TLS_FAILED', `the pool cannot read ${from}: ${err.code ?? err.message}`);
        }),
      ),
    );
    for (const [i, [name]] of files.entries()) await writeFileNoFollow(this.file(name), data[i]!, 0o600, this.options.runAs);
  }

  /** The certificate renewed in place (keel certs rotate): copied again and RELOADed; open connections keep theirs. */
  async reloadTls(): Promise<void> {
    await this.copyTlsFiles();
    if ((await this.admin(['RELOAD'], 3000)) === 'timeout') throw new KeelError('KEEL_POOL_FAILED', 'PgBouncer did not answer RELOAD within 3000 ms');
  }

  /** Writes pgbouncer.ini for this rw target (null: no database yet); RELOAD makes it current. */
  async writeIni(target: Backend | null): Promise<void> {
    const input: PoolConfigInput = {
      listen: this.options.listen,
      runDir: this.runDir,
      authFile: this.file('userlist.txt'),
      pidFile: this.file('pgbouncer.pid'),
      databases: this.options.databases,
      target,
      tls: { cert: this.file('server.crt'), key: this.file('server.key'), ca: this.file('ca.crt') },
      maxClientConnections: this.options.maxClientConnections,
      poolSize: this.options.poolSize,
      connectTimeoutMs: this.options.connectTimeoutMs,
      queryWaitTimeoutMs: this.options.queryWaitTimeoutMs,
    };
    await writeFileNoFollow(this.file('pgbouncer.ini'), pgbouncerIni(input), 0o600, this.options.runAs);
  }

  private async spawnAndWait(): Promise<void> {
    const runAs = this.options.runAs;
    const child = spawn('/bin/sh', ['-c', guardScript, this.options.binary, this.file('pgbouncer.ini')], {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: this.runDir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', KEEL_RUN_DIR: this.runDir },
      ...(runAs === null ? {} : { uid: runAs.uid, gid: runAs.gid }),
    });
    this.child = child;
    child.once('exit', () => (this.child = null));
    const watch = watchChild(child, {
      clean: redactSecrets,
      onLine: (line) => {
        const level = /\b(FATAL|ERROR)\b/.test(line) ? 'error' : /\bWARNING\b/.test(line) ? 'warn' : /\bstats:|\bLOG\b.*(login attempt|closing because)/.test(line) ? 'debug' : 'info';
        this.logger[level]({ pgbouncer: line }, 'pgbouncer says');
      },
      onExit: (how) => this.options.onExit(`PgBouncer stopped on its own (${how})`),
      stopping: () => this.stopping,
    });
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      const exited = watch.exited;
      if (exited !== null) {
        await sleep(50); // the last lines explain why
        const tail = watch.tail();
        if (/Address already in use|bind\(\) failed/i.test(tail)) throw new KeelError('KEEL_PORT_IN_USE', `PgBouncer cannot listen on ${this.options.listen.port}:\n${tail}`);
        throw new KeelError('KEEL_POOL_FAILED', `PgBouncer did not start (${exited}):\n${tail}`);
      }
      const pid = readPidFile(this.file('pgbouncer.pid'));
      if (pid !== null && (await this.admin(['SHOW VERSION'], 1000).then(() => true, () => false))) {
        this.pid = pid;
        break;
      }
      if (Date.now() > deadline) throw new KeelError('KEEL_POOL_FAILED', `PgBouncer's admin console did not answer within ${startTimeoutMs} ms`);
      await sleep(50);
    }
    this.logger.info({ pid: this.pid, listen: `${this.options.listen.host}:${this.options.listen.port}` }, 'PgBouncer started');
  }

  /**
   * Runs admin console commands in order on one connection. Resolves 'done', or
   * 'timeout' when they did not all finish within timeoutMs (the connection is then
   * dropped; a PAUSE already sent goes on in PgBouncer).
   */
  async admin(commands: string[], timeoutMs: number): Promise<'done' | 'timeout'> {
    const session = this.adminConnection(Math.min(timeoutMs, 2000));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const work = (async (): Promise<'done'> => {
      const client = await session;
      for (const command of commands) await client.query(command);
      return 'done';
    })();
    try {
      const outcome = await Promise.race([work, timedOut]);
      if (outcome === 'timeout') {
        work.catch(() => undefined);
        // a command still waiting (a PAUSE goes on in PgBouncer) must not hold up the next ones
        this.dropAdminSession(session);
      }
      return outcome;
    } catch (err) {
      // a refusal (an error PgBouncer sent) leaves the connection as good as it was
      if (!(err instanceof pg.DatabaseError)) this.dropAdminSession(session);
      throw new KeelError('KEEL_POOL_FAILED', `PgBouncer refused ${commands.join('; ')}: ${redactSecrets((err as Error).message)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The kept admin console connection, opened when there is none (or it broke). */
  private adminConnection(connectTimeoutMs: number): Promise<pg.Client> {
    if (this.adminSession !== null) return this.adminSession;
    const client = new pg.Client({ host: this.runDir, port: this.options.listen.port, user: poolAdminUser, password: this.adminPassword, database: 'pgbouncer', connectionTimeoutMillis: connectTimeoutMs });
    const session = client.connect().then(() => client);
    const drop = () => this.dropAdminSession(session);
    client.on('error', drop);
    client.on('end', drop);
    this.adminSession = session;
    session.catch(drop);
    return session;
  }

  private dropAdminSession(session: Promise<pg.Client>): void {
    if (this.adminSession === session) this.adminSession = null;
    void session.then((client) => client.end()).catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.adminSession !== null) this.dropAdminSession(this.adminSession);
    // SIGTERM is PgBouncer 1.18's immediate shutdown: every connection is closed at once
    const [pid, guard] = [this.pid, this.child];
    this.pid = null;
    this.child = null;
    await stopGuarded(pid, guard);
    if (this.dir !== null) await rm(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
}
