/**
 * What changed between two reads of the cluster, told the way a viewer wants
 * it: "no leader", "failover: node1 leads now", "node2 rejoined". Pure: views
 * and time come in, events and the next tracking state go out.
 */
import type { ClusterView } from '../model/values.js';
import { leaderOf } from '../workload/shape.js';

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
  atMs: number;
}

export interface Tracked {
  leader: string | null;
  /** the leader before the key went away, to tell a failover from a restart */
  lastLeader: string | null;
  members: Map<string, { upstream: string | null; streaming: boolean }>;
  /** members not serving yet: a new node (joining) or one whose key vanished (rejoining) */
  away: Map<string, 'joining' | 'rejoining'>;
  /** every member ever seen: a new name is a new node (the controller replaced one) */
  seen: Set<string>;
}

export const initialTracking = (): Tracked => ({ leader: null, lastLeader: null, members: new Map(), away: new Map(), seen: new Set() });

export function diffCluster(prev: Tracked, view: ClusterView, nowMs: number, first = false): { next: Tracked; events: DemoEvent[]; failover: Failover | null } {
  const events: DemoEvent[] = [];
  const say = (source: string, text: string, tone: Tone) => events.push({ atMs: nowMs, source, text, tone });
  // a leader key whose member does not run as primary yet: writes cannot succeed anyway
  const leader = leaderOf(view)?.name ?? null;
  let failover: Failover | null = null;
  let lastLeader = prev.lastLeader;

  if (leader !== prev.leader) {
    if (first) {
      if (leader !== null) say('demo', `${leader} leads`, 'info');
    } else if (leader === null) {
      say('demo', `no usable leader (${prev.leader} was leading): writes wait`, 'bad');
    } else {
      const from = prev.leader ?? lastLeader;
      if (from === leader) {
        say('demo', `${leader} leads again (it came back before a replica took over)`, 'warn');
      } else {
        failover = { from, to: leader, atMs: nowMs };
        say('demo', `FAILOVER: ${leader} leads now${from === null ? '' : `, replacing ${from}`}`, 'good');
      }
    }
    if (leader !== null) lastLeader = leader;
  }

  const members = new Map<string, { upstream: string | null; streaming: boolean }>();
  const away = new Map(prev.away);
  const seen = new Set(prev.seen);
  for (const m of view.members) {
    const streaming = m.role === 'replica' && m.streaming;
    members.set(m.name, { upstream: m.upstream, streaming });
    const before = prev.members.get(m.name);
    const isNew = !seen.has(m.name);
    seen.add(m.name);
    if (first) continue;
    if (isNew) {
      away.set(m.name, 'joining');
      say(m.name, `${m.name} joined the cluster (${m.state})`, 'info');
    } else if (before === undefined) {
      say(m.name, `${m.name} is back (${m.state})`, 'info');
    }
    if (away.has(m.name) && (streaming || m.name === leader)) {
      const verb = away.get(m.name) === 'joining' ? 'is ready' : 'rejoined';
      away.delete(m.name);
      say(m.name, m.name === leader ? `${m.name} ${verb}, as leader` : `${m.name} ${verb}: streaming from ${m.upstream ?? 'the leader'}`, 'good');
    } else if (before !== undefined && streaming && (!before.streaming || before.upstream !== m.upstream)) {
      say(m.name, `${m.name} streams from ${m.upstream ?? 'the leader'}`, 'info');
    }
  }
  for (const name of prev.members.keys()) {
    if (members.has(name)) continue;
    away.set(name, 'rejoining');
    say(name, `${name} left the cluster (its member key is gone)`, 'warn');
  }
  return { next: { leader, lastLeader, members, away, seen }, events, failover };
}
