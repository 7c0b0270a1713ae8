/**
 * The haproxy engine: runs Debian's HAProxy as a child process and moves
 * members in and out of its server slots through the runtime API on a unix
 * socket, so a leader change takes effect the moment etcd says so, never on
 * a health-check poll. HAProxy carries every byte of the connections it
 * routes; this process steers it, and holds (in a builtin engine on a unix socket,
 * HAProxy's backup server) the connections that come while an endpoint has no
 * usable server, then forwards them when the route opens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeelError } from '../../errors.js';
import { sleep } from '../../util/clock.js';
import { stopGuarded, watchChild } from '../../util/child-watch.js';
import type { Logger } from '../../util/log.js';
import { isPortFree } from '../../util/ports.js';
import type { Routes } from '../route.js';
import { BuiltinEngine } from './builtin.js';
import { cancelLua, haproxyConfig, haproxyThreads, holdServer, roBackend, rwBackend } from './haproxy-config.js';
import { checkAnswer, emptyTable, markDirty, parseServersState, planSlots, splitAnswers, type SlotTable, type Wanted } from './haproxy-runtime.js';
import { endpointStats, parseStat } from './haproxy-stats.js';
import type { EndpointStats, EngineOptions, RouterEngine } from './types.js';

export const defaultHaproxyBinary = '/usr/sbin/haproxy';
const commandTimeoutMs = 2000;
/**
 * HAProxy runs under a small shell that reads our end of a pipe: when this
 * process dies, even by SIGKILL, the pipe closes and the shell stops HAProxy,
 * so no orphan goes on serving a leader nobody follows any more. It also
 * removes the run directory (config, Lua, socket) that a killed router leaves.
 */
const guardScript = [
  'exec 3<&0',
  '"$0" "$@" </dev/null 3<&- &',
  'pid=$!',
  // HAProxy keeps our pipes; the shell's own job notices must not hit a router that is gone (SIGPIPE)
  'exec </dev/null >/dev/null 2>&1',
  '{ read _ <&3; kill -TERM "$pid"; } &',
  'reader=$!',
  'wait "$pid"; status=$?',
  'kill "$reader"',
  'case "$KEEL_RUN_DIR" in */keel-haproxy-*) rm -rf "$KEEL_RUN_DIR" ;; esac',
  'exit "$status"',
].join('\n');

/** HAProxy reports each slot change the router makes as a warning (and an empty backend as an alert): expected, so debug */
const ownDoing = /Server be_r[wo]\/s\d+ is (UP|going DOWN|DOWN)|backend 'be_r[wo]' has no server available/;
const startTimeoutMs = 10_000;

export interface HaproxyEngineOptions extends EngineOptions {
  binary: string;
  slotsPerBackend: number;
  /** called when HAProxy exits on its own: the router cannot serve without it */
  onExit: (detail: string) => void;
}

/** Sends one command line to the stats socket and returns HAProxy's whole answer. */
export function runtimeCommand(socketPath: string, command: string, timeoutMs = commandTimeoutMs): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new KeelError('KEEL_ROUTER_ENGINE_FAILED', `HAProxy did not answer "${command}" within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(new KeelError('KEEL_ROUTER_ENGINE_FAILED', `HAProxy's stats socket ${socketPath}: ${err.message}`));
    });
    socket.on('end', () => {
      clearTimeout(timer);
      resolve(answer);
    });
    socket.write(`${command}\n`);
  });
}

export class HaproxyEngine implements RouterEngine {
  readonly name = 'haproxy';
  private dir: string | null = null;
  private child: ChildProcess | null = null;
  private haproxyPid: number | null = null;
  private stopping = false;
  private tables: Record<'rw' | 'ro', SlotTable>;
  /** HAProxy's backup server for both endpoints: it holds what comes while no slot is usable, and forwards it */
  private holder: BuiltinEngine | null = null;

  constructor(
    private readonly options: HaproxyEngineOptions,
    private readonly logger: Logger,
  ) {
    this.tables = { rw: emptyTable(rwBackend, options.slotsPerBackend), ro: emptyTable(roBackend, options.slotsPerBackend) };
  }

  get socketPath(): string {
    if (this.dir === null) throw new Error('HAProxy is not started');
    return join(this.dir, 'admin.sock');
  }

  /** HAProxy's PID while it runs. */
  get pid(): number | null {
    return this.haproxyPid;
  }

  async start(): Promise<void> {
    await access(this.options.binary, constants.X_OK).catch(() => {
      throw new KeelError('KEEL_BINARY_MISSING', `HAProxy is not installed at ${this.options.binary}`);
    });
    for (const [kind, address] of [['rw', this.options.rw], ['ro', this.options.ro]] as const) {
      if (!(await isPortFree(address.host, address.port))) {
        throw new KeelError('KEEL_PORT_IN_USE', `the ${kind} address ${address.host}:${address.port} is already in use`, {
          hint: `stop what listens there, or give --${kind} another address`,
        });
      }
    }
    this.dir = await mkdtemp(join(tmpdir(), 'keel-haproxy-'));
    const configPath = join(this.dir, 'haproxy.cfg');
    const luaPath = join(this.dir, 'cancel.lua');
    // in the run directory (0700): only this user reaches the holder, and it takes no TCP port
    const holders = { rw: join(this.dir, 'hold-rw.sock'), ro: join(this.dir, 'hold-ro.sock') };
    this.holder = new BuiltinEngine({ ...this.options, rw: { path: holders.rw }, ro: { path: holders.ro } }, this.logger.child({ holder: true }));
    // whatever fails from here leaves nothing behind: the holder, HAProxy and the run directory go
    try {
      await this.holder.start();
      await writeFile(luaPath, cancelLua());
      await writeFile(
        configPath,
        haproxyConfig({
          rw: this.options.rw,
          ro: this.options.ro,
          socketPath: this.socketPath,
          luaPath,
          slotsPerBackend: this.options.slotsPerBackend,
          holders,
          connectTimeoutMs: this.options.connectTimeoutMs,
          firstBytesTimeoutMs: this.options.firstBytesTimeoutMs,
          maxConnections: this.options.maxConnections,
          threads: haproxyThreads(availableParallelism()),
        }),
      );
      await this.spawnAndWait(configPath);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  private async spawnAndWait(configPath: string): Promise<void> {
    // -db: HAProxy stays in the foreground, so the guard's `wait` follows it
    const child = spawn('/bin/sh', ['-c', guardScript, this.options.binary, '-f', configPath, '-db'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, KEEL_RUN_DIR: this.dir ?? '' },
    });
    this.child = child;
    child.once('exit', () => (this.child = null));
    const watch = watchChild(child, {
      onLine: (line) => {
        const level = ownDoing.test(line) ? 'debug' : /ALERT/.test(line) ? 'error' : /WARNING/.test(line) ? 'warn' : 'info';
        this.logger[level]({ haproxy: line }, 'haproxy says');
      },
      onExit: (how) => this.options.onExit(`HAProxy stopped on its own (${how})`),
      stopping: () => this.stopping,
    });
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      const exited = watch.exited;
      if (exited !== null) {
        await sleep(50); // the last stderr lines explain why
        const tail = watch.tail();
        if (/cannot bind socket|Address already in use/i.test(tail)) {
          throw new KeelError('KEEL_PORT_IN_USE', `HAProxy cannot listen on ${this.options.rw.port} or ${this.options.ro.port}:\n${tail}`);
        }
        throw new KeelError('KEEL_ROUTER_ENGINE_FAILED', `HAProxy did not start (${exited}):\n${tail}`);
      }
      const answer = await runtimeCommand(this.socketPath, 'show info', 500).catch(() => null);
      const pid = /^Pid: (\d+)$/m.exec(answer ?? '');
      if (pid !== null) {
        this.haproxyPid = Number(pid[1]);
        break;
      }
      if (Date.now() > deadline) throw new KeelError('KEEL_ROUTER_ENGINE_FAILED', `HAProxy's stats socket did not answer within ${startTimeoutMs} ms`);
      await sleep(50);
    }
    // the slots the engine will steer must be there, all in maintenance, before any route is applied
    const servers = parseServersState(await runtimeCommand(this.socketPath, 'show servers state'));
    const rows = servers.filter((r) => r.server !== holdServer);
    const ready = rows.filter((r) => r.state !== 'maint');
    const holders = servers.filter((r) => r.server === holdServer && r.state === 'ready');
    if (rows.length !== 2 * this.options.slotsPerBackend || ready.length > 0 || holders.length !== 2) {
      throw new KeelError(
        'KEEL_ROUTER_ENGINE_FAILED',
        `HAProxy shows ${rows.length} server slots (${ready.length} not in maintenance) and ${holders.length} ready holders; expected ${2 * this.options.slotsPerBackend}, all in maintenance, and 2`,
      );
    }
    this.logger.info({ pid: this.haproxyPid, dir: this.dir, slots: rows.length }, 'HAProxy started');
  }

  async apply(routes: Routes): Promise<void> {
    // the holder first: what HAProxy still sends it follows the new routes from now on
    await this.holder?.apply(routes);
    const rwWanted: Wanted[] = routes.rw === null ? [] : [{ backend: routes.rw, state: routes.holdRw ? 'drain' : 'ready' }];
    const roWanted: Wanted[] = [
      ...routes.ro.map((backend): Wanted => ({ backend, state: 'ready' })),
      // a draining replica keeps its connections; HAProxy sends it no new ones
      ...routes.roDraining.map((backend): Wanted => ({ backend, state: 'drain' })),
    ];
    const plans = { rw: planSlots(this.tables.rw, rwWanted), ro: planSlots(this.tables.ro, roWanted) };
    for (const kind of ['rw', 'ro'] as const) {
      if (plans[kind].unplaced.length > 0) this.logger.warn({ endpoint: kind, members: plans[kind].unplaced }, `${kind}: members left out of HAProxy`);
    }
    // rw first (a stale rw backend is the one that does harm), all in one line: one round trip, however busy the machine
    const commands = [...plans.rw.commands, ...plans.ro.commands];
    if (commands.length > 0) {
      try {
        const answers = splitAnswers(await runtimeCommand(this.socketPath, commands.join('; ')), commands.length);
        const refused = commands.map((command, i) => ({ command, answer: checkAnswer(command, answers[i]!) })).filter((c) => !c.answer.ok);
        if (refused.length > 0) {
          const { command, answer } = refused[0]!;
          throw new KeelError('KEEL_ROUTER_ENGINE_FAILED', `HAProxy refused "${command}": ${answer.ok ? '' : answer.error}`);
        }
      } catch (err) {
        // outcome unknown: the next apply sets every slot again
        this.tables = { rw: markDirty(this.tables.rw), ro: markDirty(this.tables.ro) };
        throw err;
      }
    }
    this.tables = { rw: plans.rw.next, ro: plans.ro.next };
  }

  /** From HAProxy's own counters (`show stat`) and the holder's. */
  async stats(): Promise<Record<'rw' | 'ro', EndpointStats>> {
    const rows = parseStat(await runtimeCommand(this.socketPath, 'show stat'));
    if (this.holder === null) throw new Error('HAProxy is not started');
    const held = await this.holder.stats();
    return { rw: endpointStats(rows, 'fe_rw', this.tables.rw, held.rw), ro: endpointStats(rows, 'fe_ro', this.tables.ro, held.ro) };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    // SIGTERM is HAProxy's hard stop: every connection is closed at once
    const [pid, guard] = [this.haproxyPid, this.child];
    this.haproxyPid = null;
    this.child = null;
    await stopGuarded(pid, guard);
    await this.holder?.stop();
    this.holder = null;
    if (this.dir !== null) await rm(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
}
