/**
 * What the tests of `keel aws up` and `down` share: the example deployment,
 * up's input, the options that make waits instant and keep calls on a
 * loopback port nobody listens on, and a test account installed in place of
 * the four AWS clients.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { parseAwsDeployment, type AwsDeployment } from '../../src/providers/aws-deployment.js';
import type { AwsUpInput } from '../../src/providers/aws-up.js';
import { FakeAccount } from './aws-account.js';

const root = join(import.meta.dirname, '../..');
export const exampleText = readFileSync(join(root, 'deploy/aws/keel-aws.yml'), 'utf8');
export const controllerPolicyText = readFileSync(join(root, 'deploy/aws/iam-policy.json'), 'utf8');

/** The example keel-aws.yml, changed by `change`; its text too (the etcd members carry it). */
export function deploymentOf(change: (raw: Record<string, any>) => void = () => undefined): { deployment: AwsDeployment; text: string } {
  const raw = parseYaml(exampleText) as Record<string, any>;
  change(raw);
  const text = toYaml(raw);
  return { deployment: parseAwsDeployment(raw), text };
}

export function upInput(change?: (raw: Record<string, any>) => void): AwsUpInput {
  const { deployment, text } = deploymentOf(change);
  return { deployment, deploymentText: text, keel: { kind: 'path', path: '/opt/keel' }, nodejs: 'present', controllerPolicy: controllerPolicyText };
}

/** Options for up and down: every line kept, waits instant and bounded, no call that could leave this machine. */
export function operatorOptions(lines: string[]) {
  return {
    out: (line: string) => {
      lines.push(line);
    },
    sleep: async () => undefined,
    pollDelayMs: 0,
    pollAttempts: 6,
    endpoint: 'http://127.0.0.1:9',
    maxAttempts: 1,
  };
}

/** A fresh test account in place of the AWS clients for each test (`start` in beforeEach, `reset` in afterEach). */
export function withAccount(): { account: () => FakeAccount; start: () => void; reset: () => void } {
  let current: FakeAccount | null = null;
  return {
    account: () => {
      if (current === null) throw new Error('no test account: call start() in beforeEach');
      return current;
    },
    start: () => {
      current = new FakeAccount().install();
    },
    reset: () => {
      current?.restore();
      current = null;
    },
  };
}

export const fakeCredentials = { AWS_ACCESS_KEY_ID: 'AKIATEST', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' };
