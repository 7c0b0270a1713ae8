/**
 * AWS Signature Version 4, checked the way AWS checks it: the canonical
 * request is rebuilt from what arrived (method, path, query, the signed
 * headers, the body's SHA-256), signed again with the secret the endpoint
 * knows, and compared. Written from the SigV4 specification, not with the
 * SDK's signer, so a request the SDK signs wrongly is refused here. Pure:
 * the time is a parameter.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export interface SignedRequest {
  method: string;
  /** the path as sent, before any decoding, e.g. `/` */
  path: string;
  /** the query string without `?`, as sent; '' for none */
  query: string;
  /** header names in lower case (Node's IncomingMessage.headers) */
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface SigningKeyOwner {
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  service: string;
}

export type SigV4Result =
  | { ok: true; accessKeyId: string }
  | { ok: false; code: 'AuthFailure' | 'IncompleteSignature' | 'SignatureDoesNotMatch' | 'RequestExpired'; message: string };

/** How far the request's time may be from ours, as AWS allows. */
const maxSkewMs = 15 * 60 * 1000;

const sha256Hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest();

/** RFC 3986 encoding, as SigV4 wants it (encodeURIComponent leaves !'()* alone). */
function uriEncode(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function canonicalQuery(query: string): string {
  if (query === '') return '';
  return query
    .split('&')
    .filter((pair) => pair !== '')
    .map((pair) => {
      const at = pair.indexOf('=');
      const [name, value] = at < 0 ? [pair, ''] : [pair.slice(0, at), pair.slice(at + 1)];
      return [uriEncode(decodeURIComponent(name.replace(/\+/g, ' '))), uriEncode(decodeURIComponent(value.replace(/\+/g, ' ')))] as const;
    })
    .sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : 1) : a[0] < b[0] ? -1 : 1))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
}

/** `20240102T030405Z` as a time, or null. */
function parseAmzDate(text: string): number | null {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (m === null) return null;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

function headerValue(headers: SignedRequest['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** The signature AWS would compute for this request, with `secretAccessKey`. */
export function computeSignature(request: SignedRequest, signedHeaders: string[], amzDate: string, scope: string, secretAccessKey: string): string {
  const canonicalHeaders = signedHeaders.map((name) => `${name}:${(headerValue(request.headers, name) ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  const payloadHash = headerValue(request.headers, 'x-amz-content-sha256') ?? sha256Hex(request.body);
  const canonicalRequest = [request.method, request.path, canonicalQuery(request.query), canonicalHeaders, signedHeaders.join(';'), payloadHash].join('\n');
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  const [date, region, service] = scope.split('/');
  const signingKey = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date!), region!), service!), 'aws4_request');
  return createHmac('sha256', signingKey).update(stringToSign).digest('hex');
}

/** Whether `request` carries a valid SigV4 signature by `owner` for its region and service, at `nowMs`. */
export function verifySigV4(request: SignedRequest, owner: SigningKeyOwner, nowMs: number): SigV4Result {
  const authorization = headerValue(request.headers, 'authorization');
  if (authorization === undefined || authorization === '') {
    return { ok: false, code: 'AuthFailure', message: 'AWS was not able to validate the provided access credentials: the request is not signed' };
  }
  const m = /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/([^,\s]+),\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/.exec(authorization.trim());
  if (m === null) {
    return { ok: false, code: 'IncompleteSignature', message: 'Authorization header is not AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...' };
  }
  const [, accessKeyId, scope, signedHeaderList, signature] = m as unknown as [string, string, string, string, string];
  if (accessKeyId !== owner.accessKeyId) return { ok: false, code: 'AuthFailure', message: 'AWS was not able to validate the provided access credentials' };
  const amzDate = headerValue(request.headers, 'x-amz-date') ?? '';
  const signedAt = parseAmzDate(amzDate);
  if (signedAt === null) return { ok: false, code: 'IncompleteSignature', message: 'the request has no valid X-Amz-Date header' };
  const [date, region, service, terminator] = scope.split('/');
  if (date !== amzDate.slice(0, 8) || terminator !== 'aws4_request' || scope.split('/').length !== 4) {
    return { ok: false, code: 'SignatureDoesNotMatch', message: `Credential should be scoped to a valid date and aws4_request, not ${scope}` };
  }
  if (region !== owner.region || service !== owner.service) {
    return { ok: false, code: 'SignatureDoesNotMatch', message: `Credential should be scoped to region ${owner.region} and service ${owner.service}, not ${region}/${service}` };
  }
  if (Math.abs(nowMs - signedAt) > maxSkewMs) {
    return { ok: false, code: 'RequestExpired', message: `Request has expired: signed at ${amzDate}` };
  }
  const signedHeaders = signedHeaderList.split(';');
  if (!signedHeaders.includes('host')) return { ok: false, code: 'SignatureDoesNotMatch', message: 'the host header must be signed' };
  const expected = computeSignature(request, signedHeaders, amzDate, scope, owner.secretAccessKey);
  if (!timingSafeEqual(Buffer.from(expected), Buffer.from(signature))) {
    return { ok: false, code: 'SignatureDoesNotMatch', message: 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.' };
  }
  return { ok: true, accessKeyId };
}
