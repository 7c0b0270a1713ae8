/**
 * How Node runs `keel agent`. An agent allocates little and steadily (one
 * snapshot a second, a few etcd and PostgreSQL round trips), so V8's defaults,
 * sized for servers that churn through requests, mostly hold garbage and code
 * in resident memory. Measured with bench/agent.bench.ts (README, Agent memory):
 * - a 1 MB semi-space instead of up to 16 MB: a few more scavenges, ~20 MB less;
 * - --single-threaded: no GC and compiler threads, their buffers and arenas;
 * - --optimize-for-size and --no-opt: no TurboFan code; the agent's work is
 *   round trips, not computation, so its CPU stays where it was;
 * - --lite-mode: no compiled code at all (bytecode only, feedback allocated
 *   lazily), and --bytecode-old-age=1: bytecode of functions that stopped
 *   running (start-up, option parsing) goes at the next full GC; about 10 MB
 *   less for about one more percent of a core under load. Lite mode turns
 *   WebAssembly off, so nothing the agent loads may reach Node's fetch (its
 *   parser is WebAssembly): main.ts keeps node-postgres from probing it, and
 *   test/unit/agent-process.test.ts starts the agent's command with these flags;
 * - --expose-gc: an idle agent allocates too little for V8 to collect its old
 *   generation, so a burst of work (a promotion) stayed resident; the agent
 *   collects once, 3 s after the burst (agent/idle-gc.ts);
 * - MALLOC_ARENA_MAX=1: one glibc arena instead of one per thread that mallocs.
 */
export const defaultAgentNodeFlags: readonly string[] = [
  '--max-semi-space-size=1',
  '--single-threaded',
  '--optimize-for-size',
  '--no-opt',
  '--lite-mode',
  // lite mode turns WebAssembly off anyway; said outright, V8 does not warn about it at every start
  '--no-expose-wasm',
  '--bytecode-old-age=1',
  // one full collection once the agent is quiet after a burst of work (agent/idle-gc.ts)
  '--expose-gc',
];

/** The flags, or KEEL_AGENT_NODE_FLAGS (space-separated, empty for none) for a measurement. */
export function agentNodeFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const override = env.KEEL_AGENT_NODE_FLAGS;
  if (override === undefined) return [...defaultAgentNodeFlags];
  return override.split(/\s+/).filter((flag) => flag !== '');
}

/** The agent's environment: this process's, with one malloc arena unless MALLOC_ARENA_MAX is set already. */
export function agentEnvironment(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { MALLOC_ARENA_MAX: '1', ...env };
}
