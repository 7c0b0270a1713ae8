import { describe, expect, it } from 'vitest';
import { listenBacklog } from '../../src/postgres/postmaster.js';

// /proc/net/tcp as Linux prints it; 0x52D8 = 21208, 0x52D9 = 21209; state 0A is LISTEN, 01 ESTABLISHED
const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:52D8 00000000:0000 0A 00000000:00000003 00:00000000 00000000   108        0 41251 1 0000000000000000 100 0 0 10 0
   1: 00000000:52D8 00000000:0000 0A 00000000:00000001 00:00000000 00000000   108        0 41252 1 0000000000000000 100 0 0 10 0
   2: 0100007F:52D9 00000000:0000 0A 00000000:00000007 00:00000000 00000000   108        0 41253 1 0000000000000000 100 0 0 10 0
   3: 0100007F:52D8 0100007F:C350 01 00000000:00000010 00:00000000 00000000   108        0 41254 1 0000000000000000 20 4 30 10 -1
`;
const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:52D8 00000000000000000000000000000000:0000 0A 00000000:00000002 00:00000000 00000000   108        0 41260 1 0000000000000000 100 0 0 10 0
`;

describe('the accept queue of a listening port', () => {
  it("sums the queues of every listening socket on the port, not other ports' nor connected sockets' data", () => {
    expect(listenBacklog(tcp, 21208)).toBe(4);
    expect(listenBacklog(tcp, 21209)).toBe(7);
    expect(listenBacklog(tcp6, 21208)).toBe(2);
    expect(listenBacklog(tcp, 5432)).toBe(0);
    expect(listenBacklog('', 21208)).toBe(0);
  });
});
