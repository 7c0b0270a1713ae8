import { MemoryKv } from '../../src/dcs/kv-memory.js';
import { kvContract } from '../support/kv-contract.js';

let nowMs = 1_000_000;
const kv = new MemoryKv({ now: () => nowMs });
let seq = 0;

kvContract('in memory', () => ({
  kv,
  passTime: async (ms) => {
    nowMs += ms;
  },
  prefix: () => `/contract/${++seq}/`,
}));
