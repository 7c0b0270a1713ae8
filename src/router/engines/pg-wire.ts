/**
 * The little of PostgreSQL's wire protocol the router needs: recognising the
 * first message of a connection and writing an ErrorResponse. Pure.
 */

/** Protocol 3.0 and the special request codes a client may send first. */
const protocol3 = 196608;
const sslRequestCode = 80877103;
const gssEncRequestCode = 80877104;
const cancelRequestCode = 80877102;
/** length, code, backend PID, secret key */
export const cancelRequestBytes = 16;
/** PostgreSQL itself refuses startup packets longer than this */
const maxStartupBytes = 10_000;

export type FirstMessage = 'startup' | 'ssl' | 'gssenc' | 'cancel' | 'incomplete' | 'other';

/** What the first bytes a client sent are, judged from their 8-byte header. */
export function firstMessageKind(bytes: Buffer): FirstMessage {
  if (bytes.length < 8) return 'incomplete';
  const length = bytes.readUInt32BE(0);
  const code = bytes.readUInt32BE(4);
  if (length === 8 && code === sslRequestCode) return 'ssl';
  if (length === 8 && code === gssEncRequestCode) return 'gssenc';
  if (length === 16 && code === cancelRequestCode) return 'cancel';
  if (code === protocol3 && length > 8 && length <= maxStartupBytes) return 'startup';
  return 'other';
}

/**
 * Whether the client's whole first message has come: an SSLRequest or
 * GSSENCRequest (8 bytes), a CancelRequest (16), a StartupMessage (as long as
 * its length says). Bytes that are not PostgreSQL's protocol count as complete:
 * they are forwarded as they are, and the server refuses them.
 */
export function firstMessageComplete(bytes: Buffer): boolean {
  switch (firstMessageKind(bytes)) {
    case 'incomplete':
      return false;
    case 'cancel':
      return bytes.length >= cancelRequestBytes;
    case 'startup':
      return bytes.length >= bytes.readUInt32BE(0);
    default:
      return true;
  }
}

/**
 * An ErrorResponse ('E') message. The severity appears twice, localised (S)
 * and not (V), as PostgreSQL 9.6+ sends it; clients read C for the SQLSTATE.
 */
export function errorResponse(sqlState: string, message: string, severity: 'FATAL' | 'ERROR' = 'FATAL'): Buffer {
  const fields = [`S${severity}`, `V${severity}`, `C${sqlState}`, `M${message}`].map((f) => Buffer.from(`${f}\0`, 'utf8'));
  const body = Buffer.concat([...fields, Buffer.from([0])]);
  const header = Buffer.alloc(5);
  header.write('E', 0, 'ascii');
  header.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

/** SQLSTATE 57P03 cannot_connect_now: what PostgreSQL itself answers while it cannot take connections. */
export const noLeaderError = (waitedSeconds: number): Buffer =>
  errorResponse('57P03', `the cluster has no leader (waited ${waitedSeconds} s); retry later`);
