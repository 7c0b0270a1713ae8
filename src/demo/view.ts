/**
 * What the demo shows: the live screen, the plain status line (when stdout is
 * not a terminal) and the load progress bar. Pure: a state comes in, strings
 * come out; screen.ts puts them on the terminal.
 */
import type { DemoEvent, Tone } from './changes.js';
import type { LoadProgress } from './load.js';
import type { MemberLine } from './monitor.js';
import type { OpStats, PauseTracker } from './stats.js';

export interface ViewState {
  nowMs: number;
  startedMs: number;
  durationSeconds: number | null;
  /** e.g. "cluster keel in /work/main/.keel" */
  where: string;
  replication: string;
  /** null: the demo has no etcd to read members from (--rw/--ro only) */
  members: MemberLine[] | null;
  etcdError: string | null;
  reads: OpStats;
  writes: OpStats;
  pause: PauseTracker;
  readers: number;
  writers: number;
  acknowledged: number;
  events: readonly DemoEvent[];
  /** null: chaos is not possible here (no local cluster) */
  chaos: { scheduled: boolean; nextKillAtMs: number | null; busy: boolean; kills: number } | null;
  lastError: { what: string; message: string; atMs: number } | null;
}

const esc = (code: string) => (text: string) => `\x1b[${code}m${text}\x1b[0m`;
const paint = { bold: esc('1'), dim: esc('2'), red: esc('31'), green: esc('32'), yellow: esc('33'), cyan: esc('36'), inverse: esc('7') };
type Painter = (text: string) => string;
const plain: Painter = (t) => t;

const toneColor: Record<Tone, Painter> = { info: plain, good: paint.green, warn: paint.yellow, bad: paint.red };

export const formatInt = (n: number): string => Math.round(n).toLocaleString('en-US');

export function formatMs(ms: number | null): string {
  if (ms === null) return '-';
  if (ms >= 1000) return `${(ms / 1000).toFixed(1)} s`;
  return ms >= 10 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(1)} ms`;
}

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return '-';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export const formatClock = (seconds: number): string => `${Math.floor(seconds / 60)}:${String(Math.floor(seconds % 60)).padStart(2, '0')}`;

const timeOfDay = (ms: number): string => new Date(ms).toTimeString().slice(0, 8);

/** members publish every loop (1 s): three missed loops is news */
const silentAfterMs = 3000;

const sparkChars = ' ▁▂▃▄▅▆▇█';

export function sparkline(values: number[]): string {
  const peak = Math.max(1, ...values);
  return values.map((v) => sparkChars[Math.min(8, Math.ceil((v / peak) * 8))]).join('');
}

/** Pads on visible width, then colours: ANSI codes must not count as columns. */
const cell = (text: string, width: number, color: Painter = plain, right = false): string =>
  color(right ? text.padStart(width) : text.padEnd(width));

const clip = (text: string, width: number): string => (text.length > width ? `${text.slice(0, Math.max(0, width - 1))}…` : text);

function header(s: ViewState, width: number, c: boolean): string[] {
  const elapsed = (s.nowMs - s.startedMs) / 1000;
  const clock = s.durationSeconds === null ? formatClock(elapsed) : `${formatClock(elapsed)} / ${formatClock(s.durationSeconds)}`;
  const title = ` KEEL DEMO  ${s.where} · replication ${s.replication}`;
  const first = `${clip(title, width - clock.length - 2).padEnd(width - clock.length - 1)}${clock} `;
  let chaos = 'chaos: off (needs a local cluster, --dir)';
  if (s.chaos !== null) {
    if (s.chaos.busy) chaos = 'chaos: killed the leader, holding it down until a failover';
    else if (s.chaos.scheduled && s.chaos.nextKillAtMs !== null) chaos = `chaos: next leader kill in ${Math.max(0, Math.ceil((s.chaos.nextKillAtMs - s.nowMs) / 1000))} s`;
    else if (s.chaos.scheduled) chaos = 'chaos: waiting for every node to serve again';
    else chaos = 'chaos: off (--chaos, or press k)';
    if (s.chaos.kills > 0) chaos += ` · ${s.chaos.kills} kill(s) so far`;
  }
  const keys = s.chaos === null ? '[q] quit ' : '[k] kill leader  [q] quit ';
  const second = ` ${clip(chaos, width - keys.length - 2).padEnd(width - keys.length - 1)}${keys}`;
  return [c ? paint.inverse(paint.bold(first)) : first, c ? paint.dim(second) : second];
}

function memberSection(s: ViewState, width: number, c: boolean): string[] {
  const b = c ? paint.bold : plain;
  if (s.members === null) return [b(' MEMBERS'), '  (not known: give --dir, or --etcd and --cluster, to follow the cluster in etcd)'];
  const lines = [b(` MEMBERS${s.etcdError === null ? '' : `  (etcd unreadable: ${s.etcdError})`}`)];
  lines.push(c ? paint.dim('  member   role      state       tl         lag  why') : '  member   role      state       tl         lag  why');
  if (s.members.length === 0) lines.push('  (no member has published yet)');
  for (const m of s.members) {
    const roleColor = !c ? plain : m.silentMs > silentAfterMs ? paint.red : m.leader ? paint.green : m.role === 'replica' && m.streaming ? plain : paint.yellow;
    const stateColor = !c ? plain : ['primary', 'replica'].includes(m.state) ? plain : paint.yellow;
    const row = `  ${cell(m.name, 8)} ${cell(m.role, 9, roleColor)} ${cell(m.state, 10, stateColor)} ${cell(String(m.timeline ?? '-'), 3, plain, true)} ${cell(formatBytes(m.lagBytes), 11, plain, true)}  `;
    const fixedWidth = 2 + 8 + 1 + 9 + 1 + 10 + 1 + 3 + 1 + 11 + 2;
    // a killed agent's key outlives it until the lease runs out: say so, or the dead leader looks fine
    const silent = m.silentMs > silentAfterMs ? `no news for ${Math.round(m.silentMs / 1000)} s · ` : '';
    const why = clip(`${silent}${m.reason}`, width - fixedWidth);
    lines.push(row + (!c ? why : silent !== '' ? paint.red(why) : paint.dim(why)));
  }
  return lines;
}

function workloadSection(s: ViewState, width: number, c: boolean): string[] {
  const b = c ? paint.bold : plain;
  const lines = [b(' WORKLOAD            per s       total       p50       p99   errors 5 s / all')];
  const row = (label: string, op: OpStats) => {
    const recent = op.recentErrors(s.nowMs);
    const errors = `${formatInt(recent)} / ${formatInt(op.errors)}`;
    return `  ${label.padEnd(16)} ${cell(formatInt(op.rate(s.nowMs)), 8, plain, true)} ${cell(formatInt(op.ok), 11, plain, true)} ${cell(formatMs(op.recentPercentile(0.5, s.nowMs)), 9, plain, true)} ${cell(formatMs(op.recentPercentile(0.99, s.nowMs)), 9, plain, true)}   ${recent > 0 && c ? paint.red(errors) : errors}`;
  };
  lines.push(row(`reads  ${s.readers} on ro`, s.reads));
  lines.push(row(`writes ${s.writers} on rw`, s.writes));
  const sparkWidth = Math.max(10, Math.min(60, width - 30));
  for (const [label, op] of [['reads/s ', s.reads], ['writes/s', s.writes]] as const) {
    const series = op.series(s.nowMs, sparkWidth);
    const line = sparkline(series);
    lines.push(`  ${label} ${c ? paint.cyan(line) : line}  peak ${formatInt(Math.max(...series))}`);
  }
  const pausedNow = s.pause.current(s.nowMs);
  let pauseText = `  acknowledged writes ${formatInt(s.acknowledged)} · longest write pause ${formatMs(s.pause.longestMs)}`;
  if (s.writers > 0 && pausedNow > 1000) pauseText += c ? paint.red(` · writes paused for ${formatMs(pausedNow)}`) : ` · writes paused for ${formatMs(pausedNow)}`;
  lines.push(pauseText);
  if (s.lastError !== null && s.nowMs - s.lastError.atMs < 30_000) {
    const text = clip(`  last error (${Math.round((s.nowMs - s.lastError.atMs) / 1000)} s ago, ${s.lastError.what}): ${s.lastError.message}`, width);
    lines.push(c ? paint.dim(text) : text);
  }
  return lines;
}

export function eventLine(e: DemoEvent, width: number, c: boolean): string {
  const text = clip(`  ${timeOfDay(e.atMs)}  ${e.source.padEnd(10)} ${e.text}`, width);
  return c ? toneColor[e.tone](text) : text;
}

/**
 * Cuts a line to `width` visible columns, escape sequences kept: a line the
 * terminal wraps would push the whole screen down on every redraw.
 */
export function fit(line: string, width: number): string {
  let visible = 0;
  let i = 0;
  while (i < line.length) {
    if (line[i] === '\x1b') {
      const end = line.indexOf('m', i);
      i = end === -1 ? line.length : end + 1;
      continue;
    }
    if (visible === width) return `${line.slice(0, i)}\x1b[0m`;
    visible += 1;
    // a character outside the BMP is two UTF-16 units but one column
    i += (line.codePointAt(i) ?? 0) > 0xffff ? 2 : 1;
  }
  return line;
}

/** The whole screen, `height` lines at most: the newest events fill what is left. */
export function renderLive(s: ViewState, width: number, height: number, c = true): string[] {
  const top = [...header(s, width, c), '', ...memberSection(s, width, c), '', ...workloadSection(s, width, c), '', (c ? paint.bold : plain)(' EVENTS')];
  const room = Math.max(3, height - top.length);
  const events = s.events.slice(-room).map((e) => eventLine(e, width, c));
  if (events.length === 0) events.push('  (none yet)');
  return [...top, ...events].slice(0, height).map((line) => fit(line, width));
}

/** One line every few seconds when stdout is a file or a pipe. */
export function renderPlainLine(s: ViewState): string {
  const elapsed = Math.round((s.nowMs - s.startedMs) / 1000);
  const p = (op: OpStats, q: number) => formatMs(op.recentPercentile(q, s.nowMs));
  const parts = [
    `reads ${formatInt(s.reads.rate(s.nowMs))}/s (p50 ${p(s.reads, 0.5)}, p99 ${p(s.reads, 0.99)})`,
    `writes ${formatInt(s.writes.rate(s.nowMs))}/s (p50 ${p(s.writes, 0.5)}, p99 ${p(s.writes, 0.99)})`,
    `errors ${s.reads.errors}/${s.writes.errors}`,
  ];
  const note = (m: MemberLine): string => {
    if (m.silentMs > silentAfterMs) return ` (no news for ${Math.round(m.silentMs / 1000)} s)`;
    if (m.role === 'replica' && !m.streaming) return m.state === 'replica' ? ' (not streaming)' : ` (${m.state})`;
    return m.role === 'unknown' ? ` (${m.state})` : '';
  };
  if (s.members !== null) parts.push(s.members.map((m) => `${m.name} ${m.role}${note(m)}`).join(', ') || 'no members');
  return `[${String(elapsed).padStart(4)}s] ${parts.join(' · ')}`;
}

export function renderProgress(p: LoadProgress, width: number, c = true): string {
  const fraction = p.total === 0 ? 1 : p.done / p.total;
  const rate = p.elapsedMs > 0 ? (p.done * 1000) / p.elapsedMs : 0;
  const label = ` ${(fraction * 100).toFixed(0).padStart(3)}%  ${formatInt(p.done)} / ${formatInt(p.total)} deals  ${formatInt(rate)}/s`;
  const barWidth = Math.max(10, Math.min(50, width - label.length - 12));
  const filled = Math.round(fraction * barWidth);
  const bar = '█'.repeat(filled) + '░'.repeat(barWidth - filled);
  return ` loading ${c ? paint.cyan(bar) : bar}${label}`;
}
