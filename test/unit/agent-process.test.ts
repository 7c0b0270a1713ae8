/** The V8 flags every provider starts `keel agent` with, and the override a measurement uses. */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { agentEnvironment, agentNodeFlags, defaultAgentNodeFlags } from '../../src/providers/agent-process.js';

describe('agent node flags', () => {
  it('defaults to a small young generation; KEEL_AGENT_NODE_FLAGS replaces them, empty for none', () => {
    expect(agentNodeFlags({})).toEqual([...defaultAgentNodeFlags]);
    expect(defaultAgentNodeFlags.some((flag) => flag.startsWith('--max-semi-space-size='))).toBe(true);
    expect(agentNodeFlags({ KEEL_AGENT_NODE_FLAGS: '' })).toEqual([]);
    expect(agentNodeFlags({ KEEL_AGENT_NODE_FLAGS: ' --max-semi-space-size=2  --optimize-for-size ' })).toEqual(['--max-semi-space-size=2', '--optimize-for-size']);
  });
});

describe('the agent under its flags', () => {
  it('loads everything `keel agent` imports without WebAssembly (lite mode has none) and reports a bad config as usual', () => {
    const result = spawnSync(process.execPath, [...defaultAgentNodeFlags, 'bin/keel.js', 'agent', '--config', '/nonexistent/node.yml'], {
      encoding: 'utf8',
      timeout: 30_000,
      env: agentEnvironment(process.env),
    });
    expect(result.stderr).not.toMatch(/WebAssembly|wasm/);
    expect(result.stderr).toMatch(/KEEL_CONFIG/);
    expect(result.status).toBe(2);
  });
});

describe('agent environment', () => {
  it('one malloc arena unless the operator chose otherwise; the rest of the environment kept', () => {
    expect(agentEnvironment({ PATH: '/bin' })).toEqual({ PATH: '/bin', MALLOC_ARENA_MAX: '1' });
    expect(agentEnvironment({ MALLOC_ARENA_MAX: '4' }).MALLOC_ARENA_MAX).toBe('4');
  });
});
