/**
 * The values of a cluster's missing SSM parameters, made by `keel aws up`:
 * random passwords and keys, the cluster CA, and the pairs it issues (etcd's
 * members, the controller's and the router's etcd client pairs), with
 * Debian's openssl (pki.ts) in a private directory removed at the end.
 *
 * A parameter that exists is never made again: an existing CA signs the new
 * pairs, and a key stored without its certificate (a run cut between the two)
 * gets a certificate; only a certificate whose key is gone, which no run of
 * `up` leaves, is refused. The values are returned in memory, never written
 * anywhere else and never printed.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeelError } from '../errors.js';
import { certificateAuthorityForKey, ensureCertificateAuthority, issueCertificate, issueCertificateForKey, type CertificateAuthority } from '../tls/pki.js';
import type { ParameterRecipe, ParameterSpec } from './aws-parameters.js';

/** What SSM holds already: which names, and (read only when needed) their values. */
export interface StoredParameters {
  exists(name: string): boolean;
  read(name: string): Promise<string>;
}

type Leaf = Extract<ParameterRecipe, { kind: 'leaf' }>;

interface PairSpecs {
  key: ParameterSpec & { recipe: Leaf };
  cert: ParameterSpec & { recipe: Leaf };
}

const randomValue = (): string => randomBytes(32).toString('base64url');

function refuse(message: string, hint: string): KeelError {
  return new KeelError('KEEL_AWS_FAILED', message, { hint });
}

function pairsOf(specs: ParameterSpec[]): PairSpecs[] {
  const byPair = new Map<string, Partial<PairSpecs>>();
  for (const spec of specs) {
    if (spec.recipe.kind !== 'leaf') continue;
    const entry = byPair.get(spec.recipe.pair) ?? {};
    entry[spec.recipe.part] = spec as ParameterSpec & { recipe: Leaf };
    byPair.set(spec.recipe.pair, entry);
  }
  return [...byPair.values()].map((p) => p as PairSpecs);
}

/** The values of the parameters in `specs` that `stored` lacks, by name. */
export async function makeMissingValues(cluster: string, specs: ParameterSpec[], stored: StoredParameters): Promise<Map<string, string>> {
  const values = new Map<string, string>();
  const missing = specs.filter((s) => !stored.exists(s.name));
  for (const spec of missing) {
    if (spec.recipe.kind === 'unknown') {
      throw refuse(`keel aws up does not know how to make ${spec.name}`, `store it yourself (aws ssm put-parameter --name ${spec.name} ...) and run up again`);
    }
    if (spec.recipe.kind === 'random') values.set(spec.name, randomValue());
  }
  const pairs = pairsOf(specs);
  for (const p of pairs) {
    if (stored.exists(p.cert.name) && !stored.exists(p.key.name)) {
      throw refuse(`${p.cert.name} exists without its key ${p.key.name}`, `delete ${p.cert.name} (aws ssm delete-parameter) and run up again: it issues the pair anew`);
    }
  }
  const toIssue = pairs.filter((p) => !stored.exists(p.cert.name));
  const caKey = specs.find((s) => s.recipe.kind === 'ca' && s.recipe.part === 'key');
  const caCert = specs.find((s) => s.recipe.kind === 'ca' && s.recipe.part === 'cert');
  if (caKey === undefined || caCert === undefined) return values;
  const caMissing = !stored.exists(caKey.name) || !stored.exists(caCert.name);
  if (toIssue.length === 0 && !caMissing) return values;

  // 0700, and removed below whatever happens: the CA's key is in it while the pairs are issued
  const dir = await mkdtemp(join(tmpdir(), 'keel-aws-up-'));
  try {
    const ca: CertificateAuthority = { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
    await caInto(cluster, ca, { key: caKey.name, cert: caCert.name }, pairs, stored, values);
    for (const [i, p] of toIssue.entries()) {
      const target = { cert: join(dir, `leaf-${i}.crt`), key: join(dir, `leaf-${i}.key`) };
      const request = { commonName: p.cert.recipe.commonName, names: p.cert.recipe.names, usage: p.cert.recipe.usage };
      if (stored.exists(p.key.name)) {
        await writeFile(target.key, await stored.read(p.key.name), { mode: 0o600 });
        await issueCertificateForKey(ca, target, request);
      } else {
        await issueCertificate(ca, target, request);
        values.set(p.key.name, await readFile(target.key, 'utf8'));
      }
      values.set(p.cert.name, await readFile(target.cert, 'utf8'));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return values;
}

/** The CA's files in `ca`: read from SSM, made for a stored key, or made new; what was made goes into `values`. */
async function caInto(cluster: string, ca: CertificateAuthority, names: { key: string; cert: string }, pairs: PairSpecs[], stored: StoredParameters, values: Map<string, string>): Promise<void> {
  const hasKey = stored.exists(names.key);
  const hasCert = stored.exists(names.cert);
  const caName = `keel ${cluster} CA`;
  if (hasCert && !hasKey) {
    throw refuse(`${names.cert} exists without the CA's key ${names.key}: no certificate can be issued`, `restore ${names.key}, or delete every parameter under the prefix (keel aws down --delete-parameters) to start the cluster's secrets anew`);
  }
  if (hasKey) {
    await writeFile(ca.key, await stored.read(names.key), { mode: 0o600 });
    if (hasCert) {
      await writeFile(ca.cert, await stored.read(names.cert), { mode: 0o600 });
      return;
    }
    await certificateAuthorityForKey(ca, caName);
    values.set(names.cert, await readFile(ca.cert, 'utf8'));
    return;
  }
  // a new CA: pairs another CA issued would be trusted by no one
  const orphans = pairs.flatMap((p) => [p.key.name, p.cert.name]).filter((name) => stored.exists(name));
  if (orphans.length > 0) {
    throw refuse(`the CA's parameters are gone but ${orphans.join(', ')} exist: a new CA would not sign them`, `restore ${names.key} and ${names.cert}, or delete those parameters and run up again`);
  }
  await ensureCertificateAuthority(ca, caName);
  values.set(names.key, await readFile(ca.key, 'utf8'));
  values.set(names.cert, await readFile(ca.cert, 'utf8'));
}
