import { describe, expect, it } from 'vitest';
import { KeptKeys } from '../../src/dcs/kept-keys.js';
import type { RawKv } from '../../src/dcs/view.js';

const kv = (key: string, value: string, modRevision: number, lease = '0'): RawKv => ({ key, value, modRevision: String(modRevision), lease });
const put = (key: string, value: string, modRevision: number, lease = '0') => ({ key, value, modRevision: String(modRevision), lease });
const del = (key: string, modRevision: number) => ({ key, value: null, modRevision: String(modRevision) });
const values = (kept: KeptKeys) => kept.entries().map((e) => `${e.key}=${e.value}@${e.modRevision}`);

describe('KeptKeys', () => {
  it('is no view before a read, and takes a read as it is', () => {
    const kept = new KeptKeys();
    expect(kept.loaded).toBe(false);
    kept.load('7', [kv('/c/members/b', 'B', 5, '42'), kv('/c/leader', 'L', 7, '42')]);
    expect(kept.loaded).toBe(true);
    expect(kept.revision).toBe('7');
    // key order, as a read returns them; leases kept
    expect(values(kept)).toEqual(['/c/leader=L@7', '/c/members/b=B@5']);
    expect(kept.entries()[0]!.lease).toBe('42');
  });

  it('applies changes after the read: puts, deletes, and every change of one revision', () => {
    const kept = new KeptKeys();
    kept.load('7', [kv('/c/leader', 'L1', 7), kv('/c/switchover', 'S', 6)]);
    expect(kept.apply(del('/c/leader', 8))).toBe(true);
    expect(kept.apply(put('/c/leader', 'L2', 9, '99'))).toBe(true);
    expect(kept.apply(put('/c/history', 'H', 9))).toBe(true);
    expect(kept.apply(del('/c/switchover', 9))).toBe(true);
    expect(values(kept)).toEqual(['/c/history=H@9', '/c/leader=L2@9']);
    expect(kept.entries().find((e) => e.key === '/c/leader')!.lease).toBe('99');
    expect(kept.revision).toBe('9');
  });

  it('drops changes the last read already covers, and changes older than what is kept', () => {
    const kept = new KeptKeys();
    kept.load('10', [kv('/c/leader', 'L3', 10)]);
    // a late put of a key the read shows deleted since, and a late put of an older leader
    expect(kept.apply(put('/c/switchover', 'S', 8))).toBe(false);
    expect(kept.apply(put('/c/leader', 'L2', 9))).toBe(false);
    expect(values(kept)).toEqual(['/c/leader=L3@10']);
    expect(kept.apply(put('/c/leader', 'L4', 12))).toBe(true);
    // delivered out of order after a newer one
    expect(kept.apply(put('/c/leader', 'L3b', 11))).toBe(false);
    expect(values(kept)).toEqual(['/c/leader=L4@12']);
  });

  it('a read that started before a change does not take the view back', () => {
    const kept = new KeptKeys();
    kept.load('5', [kv('/c/leader', 'L1', 5), kv('/c/members/a', 'A1', 4)]);
    // changes at 6 and 7 arrive while a read at 6 is on its way
    kept.apply(put('/c/members/a', 'A2', 7));
    kept.apply(del('/c/leader', 7));
    kept.apply(put('/c/sync', 'Y', 6));
    kept.load('6', [kv('/c/leader', 'L1', 5), kv('/c/members/a', 'A1', 4), kv('/c/sync', 'Y', 6)]);
    expect(values(kept)).toEqual(['/c/members/a=A2@7', '/c/sync=Y@6']);
    expect(kept.revision).toBe('7');
    // a read at or past the delete ends its tombstone: the key may come back
    kept.load('8', [kv('/c/members/a', 'A2', 7), kv('/c/sync', 'Y', 6), kv('/c/leader', 'L2', 8)]);
    expect(values(kept)).toEqual(['/c/leader=L2@8', '/c/members/a=A2@7', '/c/sync=Y@6']);
  });

  it('a read drops what it no longer shows unless a newer change put it, and an older read changes nothing', () => {
    const kept = new KeptKeys();
    kept.load('5', [kv('/c/members/a', 'A', 3), kv('/c/members/b', 'B', 4)]);
    // b's lease ran out at 6 and the event was lost; c came at 8
    kept.apply(put('/c/members/c', 'C', 8));
    kept.load('7', [kv('/c/members/a', 'A', 3)]);
    expect(values(kept)).toEqual(['/c/members/a=A@3', '/c/members/c=C@8']);
    kept.load('6', [kv('/c/members/a', 'A', 3), kv('/c/members/b', 'B', 4)]);
    expect(values(kept)).toEqual(['/c/members/a=A@3', '/c/members/c=C@8']);
  });

  it('takes changes before the first read and lets the read decide', () => {
    const kept = new KeptKeys();
    kept.apply(put('/c/leader', 'L1', 3));
    kept.apply(put('/c/leader', 'L2', 9));
    kept.load('6', [kv('/c/leader', 'L1', 3), kv('/c/config', 'C', 2)]);
    expect(values(kept)).toEqual(['/c/config=C@2', '/c/leader=L2@9']);
  });
});
