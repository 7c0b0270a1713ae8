/**
 * How Node runs `keel agent`. An agent allocates little and steadily (one
 * snapshot a second, a few etcd and PostgreSQL round trips), so V8's defaults,
 * sized for servers that churn through requests, mostly hold garbage and code
 * in resident memory. Measured with bench/agent.bench.ts (README, Agent memory):
 * - a 1 MB semi-space instead of up to 16 MB: a few more scavenges, ~20 MB less;
 * - --single-threaded: no GC and compiler threads, their buffers and arenas;
 * - --optimize-for-size and --no-opt: no TurboFan code; the agent's work is
 *   round trips, not computation, so its CPU stays where it was;
 * - MALLOC_ARENA_MAX=1: one glibc arena instead of one per thread that mallocs.
 */
export const defaultAgentNodeFlags: readonly string[] = ['--max-semi-space-size=1', '--single-threaded', '--optimize-for-size', '--no-opt'];

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
