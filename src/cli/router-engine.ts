/**
 * Which data plane `keel router` runs. `--engine auto` (the default) takes
 * HAProxy wherever its binary is installed and the builtin engine elsewhere:
 * on the router bench HAProxy carries more queries per CPU second than a Node
 * proxy can (README, Router throughput). Under auto, an HAProxy that is there
 * but cannot start gives way to the builtin engine; a port in use does not
 * (the builtin engine could not listen there either). The choice and its
 * reason are logged and shown by GET /status and `keel status`.
 */
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { KeelError, describeError } from '../errors.js';
import { BuiltinEngine } from '../router/engines/builtin.js';
import { HaproxyEngine } from '../router/engines/haproxy.js';
import type { EngineOptions, RouterEngine } from '../router/engines/types.js';
import type { Logger } from '../util/log.js';

export const engineFlags = ['auto', 'builtin', 'haproxy'] as const;
export type EngineFlag = (typeof engineFlags)[number];
export type EngineName = Exclude<EngineFlag, 'auto'>;

export interface EngineChoice {
  engine: EngineName;
  /** one sentence: which engine and why */
  why: string;
}

/** What --engine and the HAProxy binary's presence make of the data plane. Pure. */
export function chooseEngine(requested: EngineFlag, haproxyBinary: string, haproxyInstalled: boolean): EngineChoice {
  if (requested !== 'auto') return { engine: requested, why: `--engine ${requested}` };
  if (haproxyInstalled) return { engine: 'haproxy', why: `--engine auto: HAProxy is installed at ${haproxyBinary}` };
  return { engine: 'builtin', why: `--engine auto: no HAProxy at ${haproxyBinary}, the builtin engine serves` };
}

export async function isExecutable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

export interface EngineStartOptions {
  requested: EngineFlag;
  haproxyBinary: string;
  engineOptions: EngineOptions;
  /** called when HAProxy exits on its own */
  onExit: (detail: string) => void;
}

function createEngine(engine: EngineName, options: EngineStartOptions, logger: Logger, serving: () => boolean): RouterEngine {
  if (engine === 'builtin') return new BuiltinEngine(options.engineOptions, logger);
  // an HAProxy that dies while starting is a failed start (and, under auto, the builtin engine's turn), not a router to stop
  const onExit = (detail: string): void => {
    if (serving()) options.onExit(detail);
  };
  return new HaproxyEngine({ ...options.engineOptions, binary: options.haproxyBinary, slotsPerBackend: 16, onExit }, logger);
}

/** Chooses, starts and logs the engine; returns it with the reason it serves. */
export async function startEngine(options: EngineStartOptions, logger: Logger): Promise<{ engine: RouterEngine; why: string }> {
  const choice = chooseEngine(options.requested, options.haproxyBinary, await isExecutable(options.haproxyBinary));
  let serving = false;
  const engine = createEngine(choice.engine, options, logger.child({ engine: choice.engine }), () => serving);
  try {
    await engine.start();
    serving = true;
    logger.info({ engine: choice.engine, why: choice.why }, `engine ${choice.engine} (${choice.why})`);
    return { engine, why: choice.why };
  } catch (err) {
    const portInUse = err instanceof KeelError && err.code === 'KEEL_PORT_IN_USE';
    if (options.requested !== 'auto' || choice.engine !== 'haproxy' || portInUse) throw err;
    const why = `--engine auto: HAProxy at ${options.haproxyBinary} did not start (${describeError(err).split('\n')[0]}), the builtin engine serves`;
    logger.warn({ engine: 'builtin', why }, `engine builtin (${why})`);
    const builtin = createEngine('builtin', options, logger.child({ engine: 'builtin' }), () => true);
    await builtin.start();
    return { engine: builtin, why };
  }
}
