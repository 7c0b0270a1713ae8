/**
 * The contract of the key-value port (src/dcs/kv.ts), one suite run against
 * every implementation: the in-memory store (test/unit/kv-memory.test.ts) and
 * real etcd (test/integration/kv-etcd.test.ts). What passes here is what the
 * cluster store (src/dcs/store.ts) may rely on.
 */
import { describe, expect, it } from 'vitest';
import type { KvChange, KvStore } from '../../src/dcs/kv.js';
import { sleep } from '../../src/util/clock.js';

export interface KvWorld {
  kv: KvStore;
  /** lets `ms` of time pass as far as lease expiry is concerned */
  passTime(ms: number): Promise<void>;
}

/** Registers the contract; `world()` gives a store and a key prefix no other test uses. */
export function kvContract(name: string, world: () => { kv: KvStore; passTime: (ms: number) => Promise<void>; prefix: () => string }): void {
  describe(`key-value port contract: ${name}`, () => {
    const get = async (kv: KvStore, key: string) => (await kv.read('test read', [{ key }])).entries[0]?.[0] ?? null;

    it('reads nothing at a key never written, at some revision', async () => {
      const { kv, prefix } = world();
      const res = await kv.read('test read', [{ key: `${prefix()}nothing` }]);
      expect(res.entries).toEqual([[]]);
      expect(BigInt(res.revision)).toBeGreaterThan(0n);
    });

    it('create-if-absent: the first transaction writes, the second finds the key and writes nothing', async () => {
      const { kv, prefix } = world();
      const key = `${prefix()}claim`;
      expect(await kv.txn('t', [{ key, absent: true }], [{ put: key, value: 'first' }])).toBe(true);
      expect(await kv.txn('t', [{ key, absent: true }], [{ put: key, value: 'second' }])).toBe(false);
      expect((await get(kv, key))?.value).toBe('first');
    });

    it('compare-and-swap on the mod revision; a missing key compares as revision 0', async () => {
      const { kv, prefix } = world();
      const key = `${prefix()}cas`;
      expect(await kv.txn('t', [{ key, modRevision: '0' }], [{ put: key, value: 'a' }])).toBe(true);
      const first = (await get(kv, key))!;
      expect(await kv.txn('t', [{ key, modRevision: first.modRevision }], [{ put: key, value: 'b' }])).toBe(true);
      // the revision read before the last write is stale now
      expect(await kv.txn('t', [{ key, modRevision: first.modRevision }], [{ put: key, value: 'c' }])).toBe(false);
      const second = (await get(kv, key))!;
      expect(second.value).toBe('b');
      expect(BigInt(second.modRevision)).toBeGreaterThan(BigInt(first.modRevision));
      expect(await kv.txn('t', [{ key, modRevision: '0' }], [{ put: key, value: 'd' }])).toBe(false);
    });

    it('compares values and leases; an absent key holds neither', async () => {
      const { kv, prefix } = world();
      const key = `${prefix()}bound`;
      const missing = `${prefix()}missing`;
      const lease = await kv.grant(30);
      const other = await kv.grant(30);
      try {
        await kv.txn('t', [], [{ put: key, value: 'v', lease }]);
        expect((await get(kv, key))?.lease).toBe(lease);
        expect(await kv.txn('t', [{ key, value: 'v' }], [])).toBe(true);
        expect(await kv.txn('t', [{ key, value: 'w' }], [])).toBe(false);
        expect(await kv.txn('t', [{ key, lease }], [])).toBe(true);
        expect(await kv.txn('t', [{ key, lease: other }], [])).toBe(false);
        expect(await kv.txn('t', [{ key: missing, value: '' }], [])).toBe(false);
        expect(await kv.txn('t', [{ key: missing, lease }], [])).toBe(false);
      } finally {
        await kv.revoke(lease);
        await kv.revoke(other);
      }
    });

    it('applies all writes of a transaction at one revision, or none when a compare fails', async () => {
      const { kv, prefix } = world();
      const [a, b, c] = ['a', 'b', 'c'].map((x) => `${prefix()}${x}`) as [string, string, string];
      expect(await kv.txn('t', [], [{ put: a, value: '1' }, { put: b, value: '2' }])).toBe(true);
      const [ea, eb] = [(await get(kv, a))!, (await get(kv, b))!];
      expect(ea.modRevision).toBe(eb.modRevision);
      expect(await kv.txn('t', [{ key: a, value: '1' }, { key: b, value: 'not 2' }], [{ put: c, value: '3' }, { delete: a }])).toBe(false);
      expect(await get(kv, c)).toBeNull();
      expect((await get(kv, a))?.value).toBe('1');
    });

    it('reads several ranges at one revision, in key order, with limits and descending order', async () => {
      const { kv, prefix } = world();
      const p = prefix();
      await kv.txn('t', [], ['k1', 'k2', 'k3', 'z1'].map((x) => ({ put: `${p}${x}`, value: x })));
      const res = await kv.read('t', [
        { key: `${p}k`, end: `${p}l` },
        { key: `${p}k`, end: `${p}l`, descending: true, limit: 2 },
        { key: `${p}z1` },
      ]);
      expect(res.entries.map((range) => range.map((e) => e.value))).toEqual([['k1', 'k2', 'k3'], ['k3', 'k2'], ['z1']]);
    });

    it('deletes a key or a range of keys', async () => {
      const { kv, prefix } = world();
      const p = prefix();
      await kv.txn('t', [], ['r1', 'r2', 'r3', 's1'].map((x) => ({ put: `${p}${x}`, value: x })));
      await kv.txn('t', [], [{ delete: `${p}r1`, end: `${p}r3` }, { delete: `${p}s1` }]);
      const res = await kv.read('t', [{ key: p, end: `${p}~` }]);
      expect(res.entries[0]!.map((e) => e.value)).toEqual(['r3']);
    });

    it('refuses a write bound to a lease it does not know with KEEL_CONFLICT, and writes nothing', async () => {
      const { kv, prefix } = world();
      const lease = await kv.grant(30);
      await kv.revoke(lease);
      const key = `${prefix()}orphan`;
      await expect(kv.txn('t', [], [{ put: key, value: 'x', lease }])).rejects.toMatchObject({ code: 'KEEL_CONFLICT' });
      expect(await get(kv, key)).toBeNull();
    });

    it('revoking a lease deletes its keys at once; keep-alives then answer false', async () => {
      const { kv, prefix } = world();
      const lease = await kv.grant(30);
      const key = `${prefix()}leased`;
      await kv.txn('t', [], [{ put: key, value: 'x', lease }]);
      expect(await kv.keepAlive(lease)).toBe(true);
      await kv.revoke(lease);
      expect(await get(kv, key)).toBeNull();
      expect(await kv.keepAlive(lease)).toBe(false);
      // revoking what is gone is fine
      await kv.revoke(lease);
    });

    it('a lease not kept alive expires with its keys; one kept alive lives on', async () => {
      const { kv, prefix, passTime } = world();
      const kept = await kv.grant(2);
      const dropped = await kv.grant(2);
      const keptKey = `${prefix()}kept`;
      const droppedKey = `${prefix()}dropped`;
      await kv.txn('t', [], [{ put: keptKey, value: 'k', lease: kept }, { put: droppedKey, value: 'd', lease: dropped }]);
      for (let i = 0; i < 4; i++) {
        await passTime(1000);
        expect(await kv.keepAlive(kept)).toBe(true);
      }
      // etcd's reaper may run a little after the ttl
      for (let i = 0; i < 20 && (await get(kv, droppedKey)) !== null; i++) await passTime(250);
      expect(await get(kv, droppedKey)).toBeNull();
      expect((await get(kv, keptKey))?.value).toBe('k');
      await kv.revoke(kept);
    }, 30_000);

    it('a watch reports puts and deletes under its prefix, nothing outside it, and nothing once stopped', async () => {
      const { kv, prefix } = world();
      const p = prefix();
      const seen: KvChange[] = [];
      const stop = await kv.watch('test watch', `${p}w/`, { onChange: (c) => seen.push(c), onResync: () => undefined });
      await kv.txn('t', [], [{ put: `${p}w/one`, value: '1' }, { put: `${p}elsewhere`, value: 'x' }]);
      await kv.txn('t', [], [{ delete: `${p}w/one` }]);
      for (let i = 0; i < 50 && seen.length < 2; i++) await sleep(20);
      expect(seen.map((c) => [c.key.slice(p.length), c.value])).toEqual([['w/one', '1'], ['w/one', null]]);
      await stop();
      await kv.txn('t', [], [{ put: `${p}w/two`, value: '2' }]);
      await sleep(200);
      expect(seen).toHaveLength(2);
    });
  });
}
