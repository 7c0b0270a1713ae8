/**
 * HAProxy's runtime API as the haproxy engine speaks it: the commands that
 * move members in and out of server slots, and the parsing of HAProxy's
 * answers. Pure: plans and parses strings, never touches the socket.
 */
import type { Backend } from '../route.js';
import { slotName } from './haproxy-config.js';

export type SlotState = 'ready' | 'drain' | 'maint';

export interface Slot {
  server: string;
  /** the member the slot points at, or null when free */
  member: string | null;
  host: string;
  port: number;
  state: SlotState;
  /** true when HAProxy's state for this slot is unknown (after a failed command): the next plan sets it in full */
  dirty: boolean;
}

export interface SlotTable {
  backend: string;
  slots: Slot[];
}

export interface Wanted {
  backend: Backend;
  state: 'ready' | 'drain';
}

export interface Plan {
  commands: string[];
  next: SlotTable;
  /** members left out, each with the reason */
  unplaced: string[];
}

/**
 * `set server ... addr` takes an IP address only, and a member's host comes
 * from etcd: anything else (a host name, or text that would smuggle a second
 * command into the line) is refused here.
 */
export function isIpAddress(host: string): boolean {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (v4 !== null) return v4.slice(1).every((octet) => Number(octet) <= 255);
  return /^[0-9A-Fa-f:.]+$/.test(host) && host.includes(':') && host.length <= 45;
}

export function emptyTable(backend: string, slots: number): SlotTable {
  return {
    backend,
    slots: Array.from({ length: slots }, (_, i) => ({ server: slotName(i), member: null, host: '127.0.0.1', port: 1, state: 'maint', dirty: false })),
  };
}

const target = (table: SlotTable, slot: Slot): string => `${table.backend}/${slot.server}`;
const memberKey = (b: Backend): string => `${b.name}@${b.host}:${b.port}`;

export const setState = (server: string, state: SlotState): string => `set server ${server} state ${state}`;
export const setAddress = (server: string, host: string, port: number): string => `set server ${server} addr ${host} port ${port}`;
export const shutdownSessions = (server: string): string => `shutdown sessions server ${server}`;

/**
 * The commands that take the table to `wanted`, in an order that never lets a
 * new connection reach a backend that is leaving: slots that leave go to
 * maintenance and lose their sessions first, then slots that stay or arrive
 * are set. A member that moved (same name, new address) leaves and arrives.
 */
export function planSlots(table: SlotTable, wanted: Wanted[]): Plan {
  const wantedByKey = new Map(wanted.map((w) => [memberKey(w.backend), w]));
  const slots = table.slots.map((s) => ({ ...s }));
  const leaving: string[] = [];
  const arriving: string[] = [];
  const vacated = new Set<string>();

  for (const slot of slots) {
    const key = slot.member === null ? null : `${slot.member}@${slot.host}:${slot.port}`;
    if (key !== null && wantedByKey.has(key)) continue;
    if (slot.member !== null) vacated.add(slot.server);
    if (slot.member !== null || slot.state !== 'maint' || slot.dirty) {
      leaving.push(setState(target(table, slot), 'maint'));
      if (slot.member !== null || slot.dirty) leaving.push(shutdownSessions(target(table, slot)));
    }
    slot.member = null;
    slot.state = 'maint';
    slot.dirty = false;
  }

  const unplaced: string[] = [];
  for (const want of wanted) {
    if (!isIpAddress(want.backend.host)) {
      unplaced.push(`${want.backend.name} (host ${JSON.stringify(want.backend.host)} is not an IP address)`);
      continue;
    }
    const key = memberKey(want.backend);
    let slot = slots.find((s) => s.member !== null && `${s.member}@${s.host}:${s.port}` === key);
    if (slot === undefined) {
      // a slot whose sessions are being shut down this very moment is the last choice: its stats stay readable
      slot = slots.find((s) => s.member === null && !vacated.has(s.server)) ?? slots.find((s) => s.member === null);
      if (slot === undefined) {
        unplaced.push(`${want.backend.name} (no free slot)`);
        continue;
      }
      slot.member = want.backend.name;
      slot.host = want.backend.host;
      slot.port = want.backend.port;
      slot.dirty = true;
    }
    if (slot.dirty) arriving.push(setAddress(target(table, slot), slot.host, slot.port));
    if (slot.state !== want.state || slot.dirty) arriving.push(setState(target(table, slot), want.state));
    slot.state = want.state;
    slot.dirty = false;
  }
  return { commands: [...leaving, ...arriving], next: { backend: table.backend, slots }, unplaced };
}

/** Every slot marked unknown: the next plan sets each one again. */
export function markDirty(table: SlotTable): SlotTable {
  return { backend: table.backend, slots: table.slots.map((s) => ({ ...s, dirty: true })) };
}

export type Answer = { ok: true; text: string } | { ok: false; error: string };

/**
 * Whether HAProxy accepted a command. `set server ... state` and `shutdown
 * sessions` answer nothing on success; `set server ... addr` says what
 * changed; anything else is an error message ("No such server.", "Unknown
 * command...", "Permission denied", "Require 'backend/server'.").
 */
export function checkAnswer(command: string, answer: string): Answer {
  const text = answer.trim();
  if (/^set server \S+ addr /.test(command)) {
    if (/^(IP changed from|no need to change the addr)/.test(text)) return { ok: true, text };
    return { ok: false, error: text === '' ? 'no answer' : firstLine(text) };
  }
  if (/^(set server|shutdown sessions)\b/.test(command)) {
    return text === '' ? { ok: true, text } : { ok: false, error: firstLine(text) };
  }
  if (/^(Unknown command|Permission denied|No such)/.test(text)) return { ok: false, error: firstLine(text) };
  return { ok: true, text };
}

const firstLine = (text: string): string => text.split('\n')[0]!.trim();

/**
 * Splits the answer to `cmd1; cmd2; ...` sent on one line: HAProxy ends each
 * command's answer with an empty line, so an empty answer is just that line.
 * (None of the commands the engine batches prints an empty line of its own.)
 */
export function splitAnswers(output: string, count: number): string[] {
  const answers: string[] = [];
  let current: string[] = [];
  const lines = output.split('\n');
  // what follows the last newline is not a line (yet)
  lines.pop();
  for (const line of lines) {
    if (answers.length === count) break;
    if (line === '') {
      answers.push(current.join('\n'));
      current = [];
    } else {
      current.push(line);
    }
  }
  if (answers.length !== count) throw new Error(`expected ${count} answers from HAProxy, got ${answers.length}: ${JSON.stringify(output.slice(0, 200))}`);
  return answers;
}

export interface ServerStateRow {
  backend: string;
  server: string;
  address: string;
  port: number;
  state: SlotState;
}

/* Admin state bits of `show servers state` (HAProxy's SRV_ADMF_*): forced, inherited and resolution maintenance; forced and inherited drain. */
const adminMaint = 0x01 | 0x02 | 0x20;
const adminDrain = 0x08 | 0x10;

/**
 * Parses `show servers state [backend]`: a version line, a `#` header naming
 * the columns, then one line per server. Columns are found by name, so a
 * HAProxy that adds columns still parses.
 */
export function parseServersState(text: string): ServerStateRow[] {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const header = lines.find((l) => l.startsWith('#'));
  if (header === undefined) throw new Error(`not a "show servers state" answer: ${JSON.stringify(text.slice(0, 80))}`);
  const columns = header.slice(1).trim().split(/\s+/);
  const col = (name: string): number => {
    const i = columns.indexOf(name);
    if (i < 0) throw new Error(`"show servers state" has no ${name} column`);
    return i;
  };
  const [be, srv, addr, op, admin, port] = ['be_name', 'srv_name', 'srv_addr', 'srv_op_state', 'srv_admin_state', 'srv_port'].map(col) as [
    number, number, number, number, number, number,
  ];
  return lines
    .filter((l) => !l.startsWith('#') && /\s/.test(l))
    .map((line) => {
      const f = line.split(/\s+/);
      const adminState = Number(f[admin]);
      const opState = Number(f[op]);
      const state: SlotState = opState === 0 || (adminState & adminMaint) !== 0 ? 'maint' : (adminState & adminDrain) !== 0 ? 'drain' : 'ready';
      return { backend: f[be]!, server: f[srv]!, address: f[addr]!, port: Number(f[port]), state };
    });
}
