/**
 * The part of an AWS node's boot that writes files, run by the user data
 * (aws-userdata.ts) once it has fetched the secrets into a root-only staging
 * directory:
 *
 *   node /opt/keel/dist/providers/aws-boot.js --options /etc/keel/aws-node.json \
 *        --staging DIR --address 10.0.1.21 [--root PREFIX]
 *
 * It writes /etc/keel/tls (certificates 0644 root; the keys PostgreSQL reads
 * 0600 postgres; the router's key 0600 root), /etc/keel/node.yml (0600 root),
 * /etc/keel/router.env, and /var/lib/keel with PostgreSQL's directory (0700
 * postgres). Every file goes through writeFileNoFollow, its mode and owner set
 * on the descriptor before it appears under its name. It refuses a node
 * certificate that does not name the node's address, or a key that is not the
 * certificate's: verify-full would refuse the node later, with less to go on.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { KeelError, describeError } from '../errors.js';
import { isMainModule } from '../util/main-module.js';
import { systemUser } from '../util/os-user.js';
import { ensureDirNoFollow } from '../util/safe-dir.js';
import { writeFileNoFollow, type FileOwner } from '../util/safe-file.js';
import { awsNodeConfig, awsPaths, awsRouterEnv, awsTlsFiles, parseAwsNodeOptions, secretParameters, type SecretKey } from './aws-userdata.js';

export interface AwsBootRequest {
  optionsFile: string;
  stagingDir: string;
  address: string;
  root: string;
  /** the OS user PostgreSQL runs as; its uid and gid own the keys it reads */
  postgresOwner: FileOwner;
}

async function readStaged(dir: string, key: SecretKey): Promise<string> {
  try {
    return await readFile(join(dir, key), 'utf8');
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_INVALID', `the boot fetched no ${key} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      hint: 'check that its SSM parameter exists and that the instance role may read it',
    });
  }
}

/** A password or token: one line, its trailing line break (the AWS CLI's) dropped. */
function oneLine(key: SecretKey, text: string): string {
  const value = text.replace(/\r?\n$/, '');
  if (value.includes('\n')) throw new KeelError('KEEL_CONFIG_INVALID', `${key} spans several lines`);
  return value;
}

/** The node's certificate must name its address and go with its key. */
export function checkNodeCertificate(certPem: string, keyPem: string, address: string): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new KeelError('KEEL_TLS_FAILED', `node.crt is not a certificate: ${describeError(err)}`);
  }
  if (cert.checkIP(address) === undefined) {
    throw new KeelError('KEEL_TLS_FAILED', `node.crt does not name this node's address ${address} (its names: ${cert.subjectAltName ?? 'none'})`, {
      hint: "issue the node's certificate for the private address the instance got (launch it with that address), and store it in its SSM parameter",
    });
  }
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) {
    throw new KeelError('KEEL_TLS_FAILED', 'node.key is not the key of node.crt');
  }
}

/** Writes the node's files; returns the path of node.yml. */
export async function installAwsNodeFiles(request: AwsBootRequest): Promise<string> {
  const { root, stagingDir: dir } = request;
  const options = parseAwsNodeOptions(JSON.parse(await readFile(request.optionsFile, 'utf8')));
  const staged = Object.fromEntries(
    await Promise.all(Object.keys(secretParameters(options)).map(async (key) => [key, await readStaged(dir, key as SecretKey)] as const)),
  ) as Partial<Record<SecretKey, string>>;
  const get = (key: SecretKey): string => staged[key]!;
  checkNodeCertificate(get('node.crt'), get('node.key'), request.address);

  const config = awsNodeConfig(options, {
    address: request.address,
    superuserPassword: oneLine('superuser-password', get('superuser-password')),
    rewindPassword: oneLine('rewind-password', get('rewind-password')),
    appPassword: oneLine('app-password', get('app-password')),
    apiToken: oneLine('api-token', get('api-token')),
    root,
  });

  const rootOwner: FileOwner = { uid: 0, gid: 0 };
  const asRoot = process.getuid?.() === 0 ? rootOwner : null;
  await ensureDirNoFollow(`${root}${awsPaths.configDir}`, 0o755, asRoot);
  await ensureDirNoFollow(`${root}${awsPaths.tlsDir}`, 0o755, asRoot);
  const files = awsTlsFiles(root);
  await writeFileNoFollow(files.ca, get('ca.crt'), 0o644, asRoot);
  await writeFileNoFollow(files.nodeCert, get('node.crt'), 0o644, asRoot);
  await writeFileNoFollow(files.replicationCert, get('replication.crt'), 0o644, asRoot);
  // PostgreSQL reads these two itself (ssl_key_file, sslkey of its replication connections): its user's, 0600
  await writeFileNoFollow(files.nodeKey, get('node.key'), 0o600, request.postgresOwner);
  await writeFileNoFollow(files.replicationKey, get('replication.key'), 0o600, request.postgresOwner);
  const routerEnv = awsRouterEnv(options);
  if (routerEnv !== null) {
    await writeFileNoFollow(files.routerCert, get('router.crt'), 0o644, asRoot);
    // root's: keel-router.service hands it to its dynamic user through LoadCredential
    await writeFileNoFollow(files.routerKey, get('router.key'), 0o600, asRoot);
    await writeFileNoFollow(`${root}${awsPaths.routerEnv}`, routerEnv, 0o644, asRoot);
  }

  const nodeYml = `${root}${awsPaths.nodeConfig}`;
  const { bootstrap, ...rest } = config;
  const doc = bootstrap.dynamic === undefined ? rest : config;
  await writeFileNoFollow(nodeYml, `# written at boot by aws-boot.js from ${awsPaths.bootOptions} and SSM; it holds passwords (0600)\n${toYaml(doc)}`, 0o600, asRoot);

  // /var/lib/keel stays root's (the guard's socket); PostgreSQL owns its own directory, where initdb makes data/
  await ensureDirNoFollow(`${root}${awsPaths.stateDir}`, 0o755, asRoot);
  await ensureDirNoFollow(`${root}${awsPaths.postgresDir}`, 0o700, request.postgresOwner);
  return nodeYml;
}

async function postgresOwner(): Promise<FileOwner> {
  const owner = await systemUser('postgres');
  if (owner === null) throw new KeelError('KEEL_BINARY_MISSING', 'there is no postgres OS user: is postgresql-15 installed?');
  return owner;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { options: { type: 'string' }, staging: { type: 'string' }, address: { type: 'string' }, root: { type: 'string', default: '' } },
    strict: true,
  });
  if (!values.options || !values.staging || !values.address) {
    throw new KeelError('KEEL_USAGE', 'aws-boot.js needs --options FILE --staging DIR --address IPV4 [--root PREFIX]');
  }
  const path = await installAwsNodeFiles({
    optionsFile: values.options,
    stagingDir: values.staging,
    address: values.address,
    root: values.root ?? '',
    postgresOwner: await postgresOwner(),
  });
  process.stderr.write(`keel-boot: wrote ${path} and the node's certificates\n`);
}

// run as a program (the user data's `node .../aws-boot.js`, possibly through the /opt/keel link), not imported
if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(err instanceof KeelError ? `${err.render()}\n` : `${describeError(err)}\n`);
    process.exitCode = err instanceof KeelError ? err.exitStatus : 1;
  });
}
