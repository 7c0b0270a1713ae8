import { describe, expect, it } from 'vitest';
import { chooseEngine } from '../../src/cli/router-engine.js';

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
