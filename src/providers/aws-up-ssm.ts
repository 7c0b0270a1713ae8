/**
 * `keel aws up`'s SSM steps: at the first parameter, which of the cluster's
 * parameters exist (by name, ten at a time), and the values of the missing
 * ones (aws-secrets.ts); then each parameter is written, or kept when it
 * exists. Overwrite is never asked for: `up` never rotates a secret.
 */
import { GetParameterCommand, GetParametersCommand, PutParameterCommand, type GetParameterCommandOutput, type GetParametersCommandOutput } from '@aws-sdk/client-ssm';
import { KeelError } from '../errors.js';
import { keelTags } from './aws-operator.js';
import { clusterParameters } from './aws-parameters.js';
import type { PlannedResource } from './aws-plan.js';
import { makeMissingValues } from './aws-secrets.js';
import type { UpState } from './aws-up-state.js';

/** GetParameters takes at most ten names. */
const batch = 10;

/** Which of `names` exist (names only: nothing is decrypted). */
export async function existingParameters(s: Pick<UpState, 'op'>, names: string[]): Promise<Set<string>> {
  const existing = new Set<string>();
  for (let i = 0; i < names.length; i += batch) {
    const out = await s.op.send<GetParametersCommandOutput>('ssm', new GetParametersCommand({ Names: names.slice(i, i + batch), WithDecryption: false }));
    for (const p of out.Parameters ?? []) if (p.Name !== undefined) existing.add(p.Name);
  }
  return existing;
}

async function readParameter(s: UpState, name: string): Promise<string> {
  const out = await s.op.send<GetParameterCommandOutput>('ssm', new GetParameterCommand({ Name: name, WithDecryption: true }));
  const value = out.Parameter?.Value;
  if (value === undefined || value === '') throw new KeelError('KEEL_AWS_FAILED', `SSM parameter ${name} is empty`);
  return value;
}

async function prepare(s: UpState): Promise<NonNullable<UpState['parameters']>> {
  if (s.parameters !== null) return s.parameters;
  const d = s.input.deployment;
  const specs = clusterParameters(d);
  const existing = await existingParameters(s, specs.map((p) => p.name));
  const values = await makeMissingValues(d.cluster, specs, { exists: (name) => existing.has(name), read: (name) => readParameter(s, name) });
  s.parameters = { existing, values };
  return s.parameters;
}

export async function ensureParameter(s: UpState, r: PlannedResource): Promise<void> {
  const d = s.input.deployment;
  const { existing, values } = await prepare(s);
  if (existing.has(r.name)) {
    s.op.step('kept', r.kind, r.name);
    return;
  }
  const value = values.get(r.name);
  if (value === undefined) throw new KeelError('KEEL_AWS_FAILED', `no value was made for ${r.name}`);
  const secureString = r.properties.type === 'SecureString';
  const written = await s.op.sendUnless(
    ['ParameterAlreadyExists'],
    'ssm',
    new PutParameterCommand({
      Name: r.name,
      Value: value,
      Type: secureString ? 'SecureString' : 'String',
      ...(secureString ? { KeyId: d.ssm.kmsKeyId } : {}),
      Overwrite: false,
      Tier: 'Standard',
      Description: `Keel ${d.cluster}: ${String(r.properties.holds)}`.slice(0, 1024),
      Tags: keelTags({ 'keel:cluster': d.cluster }),
    }),
  );
  values.delete(r.name);
  existing.add(r.name);
  s.op.step(written === null ? 'kept' : 'created', r.kind, r.name, String(r.properties.type));
}
