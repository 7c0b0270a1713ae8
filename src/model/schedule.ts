/**
 * When a scheduled backup is due: a cron line of five fields in UTC
 * (`0 3 * * 0`: Sundays at 03:00) or an interval (`30m`, `6h`, `7d`). Pure.
 *
 * Cron fields: minute, hour, day of month, month, day of week (0 or 7 is
 * Sunday); each `*`, a number, a range `a-b`, a step `*\/n` or `a-b/n`, or a
 * comma-separated list of those. When both day fields are restricted, a day
 * matching either one matches, as in cron.
 */

export type Schedule =
  | { kind: 'interval'; everyMs: number; text: string }
  | { kind: 'cron'; minutes: Set<number>; hours: Set<number>; days: Set<number>; months: Set<number>; weekdays: Set<number>; anyDay: boolean; anyWeekday: boolean; text: string };

const intervalUnits: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** shorter than this would start a backup before the last one is done */
const minIntervalMs = 10_000;

function parseField(text: string, min: number, max: number): Set<number> | string {
  const values = new Set<number>();
  for (const part of text.split(',')) {
    const match = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (match === null) return `"${part}" is not *, a number, a range or a step`;
    const from = match[1] === '*' ? min : Number(match[2]);
    const to = match[1] === '*' ? max : match[3] !== undefined ? Number(match[3]) : match[4] !== undefined ? max : from;
    const step = match[4] === undefined ? 1 : Number(match[4]);
    if (from < min || to > max || from > to || step < 1) return `"${part}" is outside ${min}-${max}`;
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return values;
}

/** A schedule, or a sentence saying what is wrong with the text. */
export function parseSchedule(text: string): Schedule | string {
  const trimmed = text.trim();
  const interval = /^(\d+)\s*([smhd])$/.exec(trimmed);
  if (interval !== null) {
    const everyMs = Number(interval[1]) * intervalUnits[interval[2]!]!;
    if (everyMs < minIntervalMs) return `an interval of at least ${minIntervalMs / 1000} s`;
    return { kind: 'interval', everyMs, text: trimmed };
  }
  const fields = trimmed.split(/\s+/);
  if (fields.length !== 5) return 'a cron line of five fields (minute hour day month weekday, UTC) or an interval such as 6h or 7d';
  const limits: [number, number][] = [[0, 59], [0, 23], [1, 31], [1, 12], [0, 7]];
  const parsed: Set<number>[] = [];
  for (let i = 0; i < 5; i++) {
    const field = parseField(fields[i]!, limits[i]![0], limits[i]![1]);
    if (typeof field === 'string') return `${['minute', 'hour', 'day of month', 'month', 'day of week'][i]}: ${field}`;
    parsed.push(field);
  }
  const weekdays = new Set([...parsed[4]!].map((d) => d % 7));
  return { kind: 'cron', minutes: parsed[0]!, hours: parsed[1]!, days: parsed[2]!, months: parsed[3]!, weekdays, anyDay: fields[2] === '*', anyWeekday: fields[4] === '*', text: trimmed };
}

function dayMatches(s: Extract<Schedule, { kind: 'cron' }>, date: Date): boolean {
  if (!s.months.has(date.getUTCMonth() + 1)) return false;
  const day = s.days.has(date.getUTCDate());
  const weekday = s.weekdays.has(date.getUTCDay());
  if (s.anyDay && s.anyWeekday) return true;
  if (s.anyDay) return weekday;
  if (s.anyWeekday) return day;
  return day || weekday;
}

const dayMs = 86_400_000;
/** a cron line that matches nothing within this many days never fires (31 February) */
const searchDays = 366 * 5;

/** The first time after `afterMs` the schedule fires; null when it never does. */
export function nextRun(schedule: Schedule, afterMs: number): number | null {
  if (schedule.kind === 'interval') return afterMs + schedule.everyMs;
  const start = new Date(Math.floor(afterMs / 60_000) * 60_000 + 60_000);
  const startDay = Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate());
  const hours = [...schedule.hours].sort((a, b) => a - b);
  const minutes = [...schedule.minutes].sort((a, b) => a - b);
  for (let d = 0; d < searchDays; d++) {
    const dayStart = startDay + d * dayMs;
    if (!dayMatches(schedule, new Date(dayStart))) continue;
    for (const hour of hours) {
      for (const minute of minutes) {
        const at = dayStart + hour * 3_600_000 + minute * 60_000;
        if (at >= start.getTime()) return at;
      }
    }
  }
  return null;
}
