/**
 * Which faults run, how often, in which replication mode: the `full` profile
 * (`make chaos`: every fault in synchronous and in asynchronous mode, at
 * least twice each per mode) and the `ci` profile (`make chaos-ci`: faults 1,
 * 2 and 4 in synchronous mode, fault 9 in asynchronous mode), with
 * environment overrides. Also the seeded random generator every run draws
 * from, so a run can be repeated with CHAOS_SEED.
 */
import type { FaultId } from './faults.js';

export interface ModePlan {
  synchronousMode: 'off' | 'on' | 'strict';
  /** faults in the order they run; each id as often as it appears */
  faults: FaultId[];
}

export interface Plan {
  profile: string;
  seed: number;
  ttlSeconds: number;
  loopWaitSeconds: number;
  modes: ModePlan[];
}

export const allFaults: FaultId[] = ['1', '2', '3', '4', '5a', '5b', '6', '7', '8', '9', '10'];

/** Faults per mode in the full profile: two rounds of all 11 and then some; about 20 s each, so about 20 min in all. */
export const fullSyncFaults = 26;
export const fullAsyncFaults = 24;

/** `count` faults as rounds of every fault, each round shuffled: every fault runs before any runs twice more. */
function rounds(faults: FaultId[], count: number, rng: Rng): FaultId[] {
  const out: FaultId[] = [];
  while (out.length < count) out.push(...rng.shuffle(faults));
  return out.slice(0, count);
}

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a whole number (got ${raw})`);
  return value;
}

export function makePlan(env: NodeJS.ProcessEnv = process.env): Plan {
  const profile = env.CHAOS_PROFILE ?? 'full';
  const seed = envInt('CHAOS_SEED', Math.floor(Math.random() * 2 ** 31));
  const rng = new Rng(seed);
  const ttlSeconds = envInt('CHAOS_TTL', 10);
  const loopWaitSeconds = 1;
  const only = env.CHAOS_FAULTS ? (env.CHAOS_FAULTS.split(',') as FaultId[]) : null;
  for (const id of only ?? []) if (!allFaults.includes(id)) throw new Error(`CHAOS_FAULTS: unknown fault ${id} (known: ${allFaults.join(', ')})`);
  let modes: ModePlan[];
  // CHAOS_FAULTS replaces the fault list of every mode of the profile
  if (profile === 'ci') {
    modes = [
      { synchronousMode: 'on', faults: only ?? ['1', '2', '4'] },
      // an agent stalled while its PostgreSQL runs on: the fence must act without it
      { synchronousMode: 'off', faults: only ?? ['9'] },
    ];
  } else if (profile === 'full') {
    const faults = only ?? allFaults;
    modes = [
      // 50 faults: synchronous mode is where lost writes are enforced, so it gets a few more
      { synchronousMode: 'on', faults: rounds(faults, envInt('CHAOS_SYNC_FAULTS', fullSyncFaults), rng) },
      { synchronousMode: 'off', faults: rounds(faults, envInt('CHAOS_ASYNC_FAULTS', fullAsyncFaults), rng) },
    ];
  } else {
    throw new Error(`CHAOS_PROFILE must be full or ci (got ${profile})`);
  }
  if (env.CHAOS_MODES) {
    const wanted = env.CHAOS_MODES.split(',');
    modes = modes.filter((m) => wanted.includes(m.synchronousMode));
  }
  return { profile, seed, ttlSeconds, loopWaitSeconds, modes: modes.filter((m) => m.faults.length > 0) };
}

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** a whole number in [min, max] */
  between(min: number, max: number): number {
    return Math.floor(min + this.next() * (max - min + 1));
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('nothing to pick from');
    return items[Math.floor(this.next() * items.length)]!;
  }
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}
