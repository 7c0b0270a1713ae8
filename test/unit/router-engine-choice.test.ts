import { describe, expect, it } from 'vitest';
import { chooseEngine } from '../../src/cli/router-engine.js';
import { routerLine } from '../../src/cli/status-router.js';

describe('the router engine --engine chooses', () => {
  it.each([
    ['auto', true, 'haproxy', /auto: HAProxy is installed at \/usr\/sbin\/haproxy/],
    ['auto', false, 'builtin', /auto: no HAProxy at \/usr\/sbin\/haproxy, the builtin engine serves/],
    ['builtin', true, 'builtin', /^--engine builtin$/],
    ['haproxy', false, 'haproxy', /^--engine haproxy$/],
  ] as const)('--engine %s, HAProxy installed: %s -> %s', (requested, installed, engine, why) => {
    const choice = chooseEngine(requested, '/usr/sbin/haproxy', installed);
    expect(choice.engine).toBe(engine);
    expect(choice.why).toMatch(why);
  });
});

describe('keel status: the router line', () => {
  const endpoints = (engine: string | null) => ({ rw: { address: '127.0.0.1:6402', engine }, ro: { address: '127.0.0.1:6403', engine } });

  it('names the engine of rw and ro and why it serves', () => {
    const why = '--engine auto: HAProxy is installed at /usr/sbin/haproxy';
    expect(routerLine({ url: 'https://127.0.0.1:6404', engine: 'haproxy', why, endpoints: endpoints('haproxy'), error: null })).toBe(
      `router: rw 127.0.0.1:6402 and ro 127.0.0.1:6403 served by the haproxy engine (${why})`,
    );
  });

  it('says when the router does not answer', () => {
    expect(routerLine({ url: 'https://127.0.0.1:6404', engine: null, why: null, endpoints: endpoints(null), error: 'connect ECONNREFUSED 127.0.0.1:6404' })).toBe(
      'router: no answer from https://127.0.0.1:6404/status (connect ECONNREFUSED 127.0.0.1:6404)',
    );
  });
});
