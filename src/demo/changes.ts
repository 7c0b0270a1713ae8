/**
 * What changed between two reads of the cluster, told the way a viewer wants
 * it: "no leader", "failover: node1 leads now", "node2 rejoined". Pure: views
 * and time come in, events and the next tracking state go out.
 */
import type { ClusterView } from '../dcs/types.js';

export type Tone = 'info' | 'good' | 'warn' | 'bad';

export interface DemoEvent {
  atMs: number;
  /** who says it: a member name, "chaos", "demo" */
  source: string;
  text: string;
  tone: Tone;
}

export interface Failover {
  from: string | null;
  to: string;
  /** how long there was no usable leader; null when the key moved directly */
  noLeaderMs: number | null;
  atMs: number;
}

export interface Tracked {
  leader: string | null;
  /** the leader before the key went away, to tell a failover from a restart */
  lastLeader: string | null;
  noLeaderSinceMs: number | null;
  members: Map<string, { role: string; streaming: boolean }>;
  /** members that left or stopped streaming: their return is a rejoin */
  away: Set<string>;
}

export const initialTracking = (): Tracked => ({ leader: null, lastLeader: null, noLeaderSinceMs: null, members: new Map(), away: new Set() });

/** A leader that publishes a running primary: before that, writes cannot succeed anyway. */
export function usableLeader(view: ClusterView): string | null {
  const name = view.leader?.value.name ?? null;
  const member = view.members.find((m) => m.name === name);
  return member !== undefined && member.role === 'primary' && member.running ? name : null;
}

export function diffCluster(prev: Tracked, view: ClusterView, nowMs: number, first = false): { next: Tracked; events: DemoEvent[]; failover: Failover | null } {
  const events: DemoEvent[] = [];
  const say = (source: string, text: string, tone: Tone) => events.push({ atMs: nowMs, source, text, tone });
  const leader = usableLeader(view);
  let failover: Failover | null = null;
  let { lastLeader, noLeaderSinceMs } = prev;

  if (leader !== prev.leader) {
    if (leader === null) {
      noLeaderSinceMs = nowMs;
      if (!first) say('demo', `no usable leader (${prev.leader} was leading): writes wait`, 'bad');
    } else if (first) {
      say('demo', `${leader} leads`, 'info');
    } else {
      const from = prev.leader ?? lastLeader;
      const noLeaderMs = noLeaderSinceMs === null ? null : nowMs - noLeaderSinceMs;
      const after = noLeaderMs === null ? '' : ` after ${(noLeaderMs / 1000).toFixed(1)} s without one`;
      if (from === leader) {
        say('demo', `${leader} leads again${after} (it came back before a replica took over)`, 'warn');
      } else {
        failover = { from, to: leader, noLeaderMs, atMs: nowMs };
        say('demo', `FAILOVER: ${leader} leads now${from === null ? '' : `, replacing ${from}`}${after}`, 'good');
      }
      noLeaderSinceMs = null;
    }
    if (leader !== null) lastLeader = leader;
  }

  const members = new Map<string, { role: string; streaming: boolean }>();
  const away = new Set(prev.away);
  for (const m of view.members) {
    members.set(m.name, { role: m.role, streaming: m.streaming });
    const before = prev.members.get(m.name);
    if (!first && before === undefined) say(m.name, `${m.name} is back (${m.state})`, 'info');
    const serving = m.name === leader || (m.role === 'replica' && m.streaming);
    if (serving && away.has(m.name)) {
      away.delete(m.name);
      say(m.name, m.name === leader ? `${m.name} is back, as leader` : `${m.name} rejoined: streaming from ${m.upstream ?? 'the leader'}`, 'good');
    } else if (!first && !serving && before !== undefined && (before.streaming || before.role === 'primary') && m.name !== leader) {
      away.add(m.name);
    }
  }
  for (const name of prev.members.keys()) {
    if (members.has(name)) continue;
    away.add(name);
    say(name, `${name} left the cluster (its member key expired)`, 'warn');
  }
  return { next: { leader, lastLeader, noLeaderSinceMs, members, away }, events, failover };
}

/** Marks a member as gone on purpose (chaos killed it), so its return reads as a rejoin. */
export function markAway(tracked: Tracked, name: string): Tracked {
  return { ...tracked, away: new Set([...tracked.away, name]) };
}
