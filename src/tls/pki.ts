/**
 * A cluster's certificate authority and the certificates it issues, made by
 * Debian's openssl (no ASN.1 here). Keys are ECDSA P-256 in PKCS#8, which
 * PostgreSQL, libpq, etcd and Node all read. Reading a certificate back
 * (expiry, names) uses Node's own X509Certificate.
 *
 * Every write goes to a temporary name in the target directory and is renamed
 * into place, so a reader (PostgreSQL reloading, etcd, an agent) never sees a
 * half-written file and a crash leaves the previous pair intact.
 */
import { execFile } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { KeelError } from '../errors.js';
import { writeFileNoFollow, type FileOwner } from '../util/safe-file.js';

const run = promisify(execFile);
export const opensslBinary = '/usr/bin/openssl';

export interface CertificatePair {
  cert: string;
  key: string;
}

export interface CertificateAuthority extends CertificatePair {}

export type CertificateUsage = 'server' | 'client' | 'both';

export interface CertificateRequest {
  /** the subject's CN: PostgreSQL's cert method and etcd read the user name from it */
  commonName: string;
  /** host names and addresses a client may use to reach the holder (server and both) */
  names?: string[];
  usage: CertificateUsage;
  days?: number;
  /** owner of the key file (the OS user that must read it), default the current user */
  keyOwner?: FileOwner | null;
}

export const defaultCaDays = 3650;
export const defaultCertificateDays = 365;

async function openssl(args: string[], what: string): Promise<void> {
  try {
    await run(opensslBinary, args, { timeout: 30_000, maxBuffer: 1024 * 1024 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') {
      throw new KeelError('KEEL_BINARY_MISSING', `openssl is not installed at ${opensslBinary}`, { hint: 'apt-get install openssl' });
    }
    throw new KeelError('KEEL_TLS_FAILED', `${what} failed: ${(e.stderr ?? e.message).trim().split('\n').slice(-3).join('; ')}`, {
      hint: 'check that the CA files are readable and not damaged',
      cause: err,
    });
  }
}

/** A DN component or SAN safe to put in an openssl config file. */
function checkName(value: string, what: string): string {
  if (!/^[A-Za-z0-9*][A-Za-z0-9.\-_:*]{0,252}$/.test(value)) {
    throw new KeelError('KEEL_CONFIG_INVALID', `${what} ${JSON.stringify(value)} cannot go into a certificate`, {
      hint: 'use letters, digits, dots, dashes and underscores',
    });
  }
  return value;
}

function subjectAltNames(names: string[]): string {
  const unique = [...new Set(names)];
  // an IPv6 address may begin with ':' (::1); a zone (%eth0) has no place in a certificate
  const address = (name: string): string => (/^[0-9A-Fa-f:.]+$/.test(name) ? name : checkName(name, 'address'));
  return unique.map((name) => (isIP(name) ? `IP:${address(name)}` : `DNS:${checkName(name, 'host name')}`)).join(',');
}

function extensionsFor(request: CertificateRequest): string[] {
  const usage = { server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth' }[request.usage];
  const lines = [
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage = ${usage}`,
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid,issuer',
  ];
  const names = request.names ?? [];
  if (request.usage !== 'client' && names.length === 0) {
    throw new KeelError('KEEL_CONFIG_INVALID', `a server certificate for ${request.commonName} needs at least one host name or address`);
  }
  if (names.length > 0) lines.push(`subjectAltName = ${subjectAltNames(names)}`);
  return lines;
}

function opensslConfig(commonName: string, extensions: string[]): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9 .\-_]{0,63}$/.test(commonName)) {
    throw new KeelError('KEEL_CONFIG_INVALID', `common name ${JSON.stringify(commonName)} cannot go into a certificate`, {
      hint: 'use at most 64 letters, digits, spaces, dots, dashes and underscores',
    });
  }
  return ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', `CN = ${commonName}`, '[ext]', ...extensions, ''].join('\n');
}

async function withScratch<T>(near: string, work: (scratch: string) => Promise<T>): Promise<T> {
  const scratch = join(dirname(near), `.keel-pki-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(scratch, { mode: 0o700 });
  try {
    return await work(scratch);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Moves a freshly made pair into place: key first, so a new certificate never meets an old key. */
async function install(scratch: string, target: CertificatePair, keyOwner: FileOwner | null): Promise<void> {
  await mkdir(dirname(target.key), { recursive: true });
  await mkdir(dirname(target.cert), { recursive: true });
  await writeFileNoFollow(target.key, readFileSync(join(scratch, 'key.pem')), 0o600, keyOwner);
  await writeFileNoFollow(target.cert, readFileSync(join(scratch, 'cert.pem')), 0o644, null);
}

/** A new key in the scratch directory, or a copy of the one at `existing`, which keeps its place. */
async function keyInto(scratch: string, existing: string | null, what: string): Promise<void> {
  if (existing === null) {
    await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(scratch, 'key.pem')], `making the key of ${what}`);
    return;
  }
  await writeFile(join(scratch, 'key.pem'), readFileSync(existing), { mode: 0o600 });
}

/** Creates the CA unless both of its files exist; returns its paths. */
export async function ensureCertificateAuthority(ca: CertificateAuthority, name: string, days = defaultCaDays): Promise<CertificateAuthority> {
  if (existsSync(ca.cert) && existsSync(ca.key)) return ca;
  return makeCertificateAuthority(ca, name, days, null);
}

/**
 * The CA's certificate for the key already at `ca.key` (one whose certificate was lost): certificates that key
 * signed under the same name verify against the new one.
 */
export async function certificateAuthorityForKey(ca: CertificateAuthority, name: string, days = defaultCaDays): Promise<CertificateAuthority> {
  return makeCertificateAuthority(ca, name, days, ca.key);
}

async function makeCertificateAuthority(ca: CertificateAuthority, name: string, days: number, existingKey: string | null): Promise<CertificateAuthority> {
  // the directory stays readable: PostgreSQL (another OS user) reads ca.crt beside the key, which is 0600
  await mkdir(dirname(ca.key), { recursive: true, mode: 0o755 });
  await withScratch(ca.key, async (scratch) => {
    const config = join(scratch, 'req.cnf');
    await writeFile(config, opensslConfig(name, ['basicConstraints = critical,CA:TRUE,pathlen:0', 'keyUsage = critical,keyCertSign,cRLSign', 'subjectKeyIdentifier = hash']), { mode: 0o600 });
    await keyInto(scratch, existingKey, 'the CA');
    await openssl(
      ['req', '-new', '-x509', '-config', config, '-extensions', 'ext', '-key', join(scratch, 'key.pem'), '-days', String(days), '-out', join(scratch, 'cert.pem')],
      'making the CA certificate',
    );
    await install(scratch, ca, null);
  });
  return ca;
}

/** Issues a new key and certificate signed by the CA, replacing any pair at `target`. */
export async function issueCertificate(ca: CertificateAuthority, target: CertificatePair, request: CertificateRequest): Promise<CertificatePair> {
  return issue(ca, target, request, null);
}

/** Issues a certificate signed by the CA for the key already at `target.key`, which stays as it is. */
export async function issueCertificateForKey(ca: CertificateAuthority, target: CertificatePair, request: CertificateRequest): Promise<CertificatePair> {
  return issue(ca, target, request, target.key);
}

async function issue(ca: CertificateAuthority, target: CertificatePair, request: CertificateRequest, existingKey: string | null): Promise<CertificatePair> {
  if (!existsSync(ca.cert) || !existsSync(ca.key)) {
    throw new KeelError('KEEL_TLS_FAILED', `no CA at ${ca.cert}`, { hint: 'create the cluster (keel up) or give the CA files' });
  }
  const extensions = extensionsFor(request);
  await mkdir(dirname(target.key), { recursive: true });
  await withScratch(target.key, async (scratch) => {
    const config = join(scratch, 'req.cnf');
    await writeFile(config, opensslConfig(request.commonName, extensions), { mode: 0o600 });
    await keyInto(scratch, existingKey, request.commonName);
    await openssl(
      ['req', '-new', '-x509', '-config', config, '-extensions', 'ext', '-key', join(scratch, 'key.pem'), '-CA', ca.cert, '-CAkey', ca.key,
        '-days', String(request.days ?? defaultCertificateDays), '-out', join(scratch, 'cert.pem')],
      `signing the certificate of ${request.commonName}`,
    );
    await install(scratch, target, request.keyOwner ?? null);
  });
  return target;
}

/** Issues the pair unless one exists that is valid for at least `minDays` more and names every wanted host. */
export async function ensureCertificate(ca: CertificateAuthority, target: CertificatePair, request: CertificateRequest, minDays = 30): Promise<CertificatePair> {
  if (existsSync(target.cert) && existsSync(target.key)) {
    const info = readCertificate(target.cert);
    const fresh = info.notAfter.getTime() - Date.now() > minDays * 86_400_000;
    const named = (request.names ?? []).every((name) => info.names.includes(name));
    if (fresh && named && info.commonName === request.commonName) return target;
  }
  return issueCertificate(ca, target, request);
}

export interface CertificateInfo {
  commonName: string;
  names: string[];
  notAfter: Date;
  /** whole days left, negative once expired */
  daysLeft: number;
  fingerprint: string;
}

export function readCertificate(path: string): CertificateInfo {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readFileSync(path));
  } catch (err) {
    throw new KeelError('KEEL_TLS_FAILED', `${path} is not a readable PEM certificate: ${(err as Error).message}`, { hint: 'give a PEM file' });
  }
  const names = (cert.subjectAltName ?? '')
    .split(', ')
    .filter((entry) => entry !== '')
    .map((entry) => entry.replace(/^(DNS|IP Address):/, ''));
  const notAfter = new Date(cert.validTo);
  const commonName = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1] ?? '';
  return { commonName, names, notAfter, daysLeft: Math.floor((notAfter.getTime() - Date.now()) / 86_400_000), fingerprint: cert.fingerprint256 };
}

/** Moves `from` over `to` within one directory (used to swap a whole pair's directory). */
export async function replaceFile(from: string, to: string): Promise<void> {
  await rename(from, to);
}
