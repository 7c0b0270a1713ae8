/** The pieces EtcdDcs builds its transactions from: compares, puts, deletes, and key-values as the view reads them. */
import type { ICompare, IKeyValue, IRequestOp } from 'etcd3';
import type { RawKv } from './view.js';

export const buf = (text: string): Buffer => Buffer.from(text, 'utf8');

export const createdNever = (key: string): ICompare => ({ key: buf(key), target: 'Create', result: 'Equal', create_revision: 0 });
export const modifiedAt = (key: string, revision: string): ICompare => ({
  key: buf(key),
  target: 'Mod',
  result: 'Equal',
  mod_revision: revision,
});
/** The key is bound to this lease (a missing key compares as lease 0). */
export const leaseIs = (key: string, leaseId: string): ICompare => ({ key: buf(key), target: 'Lease', result: 'Equal', lease: leaseId });
export const valueIs = (key: string, value: string): ICompare => ({ key: buf(key), target: 'Value', result: 'Equal', value: buf(value) });
export const put = (key: string, value: string, lease?: string): IRequestOp => ({
  request_put: { key: buf(key), value: buf(value), ...(lease === undefined ? {} : { lease }) },
});
export const del = (key: string): IRequestOp => ({ request_delete_range: { key: buf(key) } });

export const toRaw = (kv: IKeyValue): RawKv => ({
  key: kv.key.toString('utf8'),
  value: kv.value.toString('utf8'),
  modRevision: String(kv.mod_revision),
  lease: String(kv.lease ?? '0'),
});
