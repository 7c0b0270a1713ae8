/**
 * Judging and reporting: which runs broke a correctness rule, one summary row
 * per (mode, fault), and the JSON and markdown files of a suite run. The suite
 * fails on correctness only, never on time.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { faults, type FaultId } from './faults.js';
import type { Plan } from './plan.js';
import type { RunResult } from './runner.js';

/**
 * Faults where the old primary's PostgreSQL runs on while what should stop it
 * is crashed, stalled or misled: no replication mode excuses it acknowledging
 * a write past its lease, so they are judged on split-brain in every mode.
 */
export const fencingFaultIds: readonly string[] = ['8', '9', '10'];

/** Why a run broke a correctness rule; empty when it did not. */
export function violations(r: RunResult): string[] {
  const out: string[] = [];
  const synchronous = r.mode !== 'off';
  const fencing = fencingFaultIds.includes(r.fault);
  if (r.error !== null) out.push(r.error.split('\n')[0]!);
  if (!r.healed && r.error === null) out.push('not healed within 30 s of the end of the fault');
  if (r.notCaughtUp.length > 0) out.push(`replicas not caught up after healing: ${r.notCaughtUp.join(', ')}`);
  for (const [node, count] of Object.entries(r.writes.missingOnReplicas)) out.push(`${count} acknowledged writes missing on caught-up replica ${node}`);
  if (r.writes.unknownServer > 0) out.push(`${r.writes.unknownServer} writes acknowledged by an unknown server`);
  if (synchronous && r.writes.lost > 0) out.push(`${r.writes.lost} acknowledged writes lost in synchronous mode`);
  if ((synchronous || fencing) && r.writes.splitBrain > 0) {
    const { router, direct } = r.writes.byClient;
    out.push(`${r.writes.splitBrain} split-brain writes in ${synchronous ? 'synchronous' : 'asynchronous'} mode (${router.splitBrain} through the router, ${direct.splitBrain} direct)`);
  }
  const margin = r.oldPrimary?.marginMs ?? null;
  if (fencing && margin !== null && margin > 0) {
    out.push(`old primary ${r.oldPrimary!.oldPrimary} acknowledged a write ${(margin / 1000).toFixed(2)} s after ${r.oldPrimary!.nextLeader} led`);
  }
  return out;
}

export interface SummaryRow {
  mode: string;
  fault: string;
  title: string;
  runs: number;
  maxUnavailabilitySeconds: number;
  lostAcknowledgedWrites: number;
  splitBrainWrites: number;
  maxHealSeconds: number | null;
  notHealed: number;
  lateAcks: number;
  acknowledgedWrites: number;
  byClient: Record<'router' | 'direct', { acked: number; lost: number; splitBrain: number }>;
  /** runs in which another member led after the fault began */
  leaderChanges: number;
  /** the largest (old primary's last acknowledged write - next leader's start) over those runs */
  maxOldPrimaryMarginSeconds: number | null;
  failedRuns: number;
}

export function summarize(results: RunResult[]): SummaryRow[] {
  const rows = new Map<string, SummaryRow>();
  for (const r of results) {
    const key = `${r.mode}/${r.fault}`;
    const row = rows.get(key) ?? {
      mode: r.mode, fault: r.fault, title: faults[r.fault as FaultId]?.title ?? r.fault, runs: 0, maxUnavailabilitySeconds: 0,
      lostAcknowledgedWrites: 0, splitBrainWrites: 0, maxHealSeconds: null, notHealed: 0, lateAcks: 0, acknowledgedWrites: 0,
      byClient: { router: { acked: 0, lost: 0, splitBrain: 0 }, direct: { acked: 0, lost: 0, splitBrain: 0 } },
      leaderChanges: 0, maxOldPrimaryMarginSeconds: null, failedRuns: 0,
    };
    row.runs += 1;
    row.maxUnavailabilitySeconds = Math.max(row.maxUnavailabilitySeconds, r.unavailabilitySeconds);
    row.lostAcknowledgedWrites += r.writes.lost;
    row.splitBrainWrites += r.writes.splitBrain;
    row.lateAcks += r.writes.lateAcks;
    row.acknowledgedWrites += r.writes.acked;
    for (const kind of ['router', 'direct'] as const) {
      const from = r.writes.byClient[kind];
      const to = row.byClient[kind];
      to.acked += from.acked;
      to.lost += from.lost;
      to.splitBrain += from.splitBrain;
    }
    if (r.oldPrimary !== null) {
      row.leaderChanges += 1;
      const margin = r.oldPrimary.marginMs;
      if (margin !== null) row.maxOldPrimaryMarginSeconds = Math.max(row.maxOldPrimaryMarginSeconds ?? -Infinity, margin / 1000);
    }
    if (r.healSeconds !== null) row.maxHealSeconds = Math.max(row.maxHealSeconds ?? 0, r.healSeconds);
    if (!r.healed) row.notHealed += 1;
    if (violations(r).length > 0) row.failedRuns += 1;
    rows.set(key, row);
  }
  const modeOrder = (m: string) => (m === 'off' ? 1 : 0);
  return [...rows.values()].sort((a, b) => modeOrder(a.mode) - modeOrder(b.mode) || a.fault.localeCompare(b.fault, 'en', { numeric: true }));
}

const modeName = (mode: string) => (mode === 'off' ? 'async' : `sync (${mode})`);
const seconds = (s: number | null) => (s === null ? '-' : s.toFixed(1));
const signed = (s: number) => `${s > 0 ? '+' : ''}${s.toFixed(2)}`;

/** The old primary's margin of one run: '-' when no other member led, 'no ack' when it acknowledged nothing. */
function marginCell(r: RunResult): string {
  if (r.oldPrimary === null) return '-';
  if (r.oldPrimary.marginMs === null) return `no ack (${r.oldPrimary.nextLeader} led)`;
  return `${signed(r.oldPrimary.marginMs / 1000)} (${r.oldPrimary.nextLeader} led)`;
}

export function markdown(plan: Plan, results: RunResult[], wallSeconds: number): string {
  const rows = summarize(results);
  const failed = results.filter((r) => violations(r).length > 0);
  const lines = [
    `# Keel chaos run: ${plan.profile}`,
    '',
    `seed ${plan.seed}, ttl ${plan.ttlSeconds} s, loop_wait ${plan.loopWaitSeconds} s, ${results.length} faults in ${(wallSeconds / 60).toFixed(1)} min; ` +
      `${failed.length === 0 ? 'no correctness failure' : `${failed.length} run(s) FAILED`}`,
    '',
    '| fault | mode | runs | max unavailability (s) | lost acknowledged writes: router | lost: direct | split-brain writes: router | split-brain: direct | old primary last ack - next leader, max (s) | time to heal, max (s) | not healed | late acks |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.fault}: ${r.title} | ${modeName(r.mode)} | ${r.runs} | ${r.maxUnavailabilitySeconds.toFixed(1)} | ` +
        `${r.byClient.router.lost} / ${r.byClient.router.acked} | ${r.byClient.direct.lost} / ${r.byClient.direct.acked} | ${r.byClient.router.splitBrain} | ${r.byClient.direct.splitBrain} | ` +
        `${r.maxOldPrimaryMarginSeconds === null ? '-' : signed(r.maxOldPrimaryMarginSeconds)} (${r.leaderChanges} of ${r.runs} runs changed leader) | ${seconds(r.maxHealSeconds)} | ${r.notHealed} | ${r.lateAcks} |`,
    ),
    '',
    'Unavailability: longest stretch without an acknowledged write through the router, from the start of the fault.',
    'Direct: clients connected straight to the nodes (one persistent connection per node, connection-per-transaction writers to the leader before the fault); their writes are judged as the router\'s are.',
    'Old primary last ack - next leader: statement time of the last write the leader before the fault acknowledged, minus the moment another member was first seen leading; above 0 proves a write acknowledged by the old primary while another member led (a failure for faults 8-10 in every mode); at or below 0 it stopped first, within the observer\'s lag (about 0.2 s).',
    'Time to heal: from the end of the fault (restart, SIGCONT, heal) until every member streams from the leader again.',
    'Late acks: answers that arrived after the end of the tenure of the node that gave them, for statements that ran within it (not proven violations).',
    '',
    '## Runs',
    '',
    '| # | mode | fault | target | leader before -> after | unavailability (s) | heal (s) | acked: router / direct | lost: router / direct | split-brain: router / direct | old primary last ack - next leader (s) | notes |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...results.map((r, i) => {
      const notes = [...violations(r).map((v) => `**${v}**`), ...r.notes].join('; ').replace(/\|/g, '/');
      const { router, direct } = r.writes.byClient;
      return (
        `| ${i + 1} | ${modeName(r.mode)} | ${r.fault} | ${r.target ?? '-'} | ${r.leaderBefore ?? '-'} -> ${r.leaderAfter ?? '-'} | ${r.unavailabilitySeconds.toFixed(1)} | ${seconds(r.healSeconds)} | ` +
        `${router.acked} / ${direct.acked} | ${router.lost} / ${direct.lost} | ${router.splitBrain} / ${direct.splitBrain} | ${marginCell(r)} | ${notes} |`
      );
    }),
    '',
  ];
  return lines.join('\n');
}

export function writeResults(dir: string, plan: Plan, results: RunResult[], wallSeconds: number): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const json = join(dir, 'results.json');
  const md = join(dir, 'results.md');
  const summary = summarize(results);
  writeFileSync(json, `${JSON.stringify({ plan, wallSeconds, summary, results }, null, 2)}\n`);
  writeFileSync(md, markdown(plan, results, wallSeconds));
  return { json, md };
}
