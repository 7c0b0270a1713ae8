import { describe, expect, it } from 'vitest';
import { toMonotonicDeadline } from '../../src/guard/clock.js';
import {
  LineSplitter,
  maxLineBytes,
  parseAgentMessage,
  parseGuardMessage,
  serializeMessage,
  type AgentMessage,
  type GuardMessage,
} from '../../src/guard/protocol.js';

const feed: AgentMessage = { v: 1, type: 'feed', agentPid: 4242, leaseId: '694d7f1a2b3c', deadlineMonoMs: 123456.789 };
const state: GuardMessage = {
  v: 1,
  type: 'state',
  guardPid: 77,
  dataDir: '/var/lib/keel/data',
  monoNowMs: 120000.5,
  deadlineMonoMs: 123456.789,
  fedByPid: 4242,
  tripped: false,
  fences: 0,
};

describe('guard protocol codec', () => {
  it('round-trips every message as one line', () => {
    const messages: (AgentMessage | GuardMessage)[] = [
      feed,
      { ...feed, leaseId: null },
      { v: 1, type: 'hello', agentPid: 9 },
      state,
      { ...state, deadlineMonoMs: null, fedByPid: null, tripped: true, fences: 3 },
      { v: 1, type: 'error', message: 'not JSON' },
    ];
    for (const message of messages) {
      const line = serializeMessage(message);
      expect(line.endsWith('\n')).toBe(true);
      expect(line.indexOf('\n')).toBe(line.length - 1);
      const parsed = message.type === 'feed' || message.type === 'hello' ? parseAgentMessage(line.trim()) : parseGuardMessage(line.trim());
      expect(parsed).toEqual({ ok: true, message });
    }
  });

  it.each([
    ['not JSON', '{"v":1,', /not JSON/],
    ['unknown version', JSON.stringify({ ...feed, v: 2 }), /^v:/],
    ['unknown type', JSON.stringify({ v: 1, type: 'fence', agentPid: 1 }), /^type:/],
    ['negative deadline', JSON.stringify({ ...feed, deadlineMonoMs: -1 }), /^deadlineMonoMs:/],
    ['deadline as a string', JSON.stringify({ ...feed, deadlineMonoMs: '123' }), /^deadlineMonoMs:/],
    ['wall-clock field instead of a monotonic one', JSON.stringify({ v: 1, type: 'feed', agentPid: 1, leaseId: null, deadlineMs: 1 }), /deadlineMonoMs|Unrecognized/],
    ['extra field', JSON.stringify({ ...feed, extra: true }), /Unrecognized/i],
    ['PID zero', JSON.stringify({ ...feed, agentPid: 0 }), /^agentPid:/],
    ['fractional PID', JSON.stringify({ ...feed, agentPid: 1.5 }), /^agentPid:/],
    ['a guard message sent to the guard', JSON.stringify(state), /^type:/],
    ['null', 'null', /\(message\)/],
  ])('refuses %s, naming the field', (_name, line, why) => {
    const parsed = parseAgentMessage(line);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.error).toMatch(why);
  });

  it('refuses a guard answer the agent cannot trust', () => {
    expect(parseGuardMessage(JSON.stringify({ ...state, tripped: 'no' })).ok).toBe(false);
    expect(parseGuardMessage(JSON.stringify({ ...state, dataDir: '' })).ok).toBe(false);
    expect(parseGuardMessage(JSON.stringify(feed)).ok).toBe(false);
  });

  it('will not serialize a value the other side would refuse', () => {
    expect(() => serializeMessage({ ...feed, deadlineMonoMs: Number.NaN })).toThrow();
    expect(() => serializeMessage({ ...feed, deadlineMonoMs: Number.POSITIVE_INFINITY })).toThrow();
  });
});

describe('line splitter', () => {
  it('joins chunks into lines and keeps the unfinished tail', () => {
    const splitter = new LineSplitter();
    expect(splitter.push('{"a":')).toEqual([]);
    expect(splitter.push('1}\n{"b"')).toEqual(['{"a":1}']);
    expect(splitter.push(':2}\n\n  \n{"c":3}\n')).toEqual(['{"b":2}', '{"c":3}']);
    expect(splitter.overflow).toBe(false);
  });

  it('gives up on a line longer than allowed, whether it ended or not', () => {
    const unfinished = new LineSplitter();
    expect(unfinished.push('x'.repeat(maxLineBytes + 1))).toEqual([]);
    expect(unfinished.overflow).toBe(true);
    expect(unfinished.push('\n{"a":1}\n')).toEqual([]);
    const ended = new LineSplitter();
    expect(ended.push(`${'x'.repeat(maxLineBytes + 1)}\n{"a":1}\n`)).toEqual([]);
    expect(ended.overflow).toBe(true);
    expect(new LineSplitter().push(`${'x'.repeat(maxLineBytes)}\n`)).toHaveLength(1);
  });
});

describe('monotonic deadline', () => {
  it('carries the time left on the wall clock over to the monotonic clock', () => {
    // lease renewed at wall 1_000_000, deadline 8 s later; it is now 1_003_000 on the wall and 500_000 monotonic
    expect(toMonotonicDeadline(1_008_000, 1_003_000, 500_000)).toBe(505_000);
    // a deadline already past stays past
    expect(toMonotonicDeadline(1_000_000, 1_003_000, 500_000)).toBe(497_000);
    expect(toMonotonicDeadline(0, 1_003_000, 500)).toBe(0);
  });
});
