/**
 * Steps of an instance's bash user data that every kind of Keel instance
 * runs the same way: the test hooks, installing missing Debian packages,
 * Node.js 20, Keel itself, the instance's address from its metadata (IMDSv2) and fetching a
 * secret by SSM parameter name. Pure text; each fragment expects the
 * variables the user data's header sets (keel_region, keel_nodejs,
 * keel_source_kind, keel_source, keel_source_sha256) and nothing else.
 */

/** log/fail, the KEEL_BOOT_* test hooks and their checks. */
export const bootPreludeShell = `
log() { printf 'keel-boot: %s\\n' "$*" >&2; }
fail() { log "$*"; exit 1; }

root="\${KEEL_BOOT_ROOT:-}"
secrets_dir="\${KEEL_BOOT_SECRETS_DIR:-}"
address="\${KEEL_BOOT_ADDRESS:-}"
use_systemd="\${KEEL_BOOT_SYSTEMD:-1}"

[ "$(id -u)" -eq 0 ] || fail "run as root (cloud-init does)"
case "$root" in ''|/*) ;; *) fail "KEEL_BOOT_ROOT must be an absolute path" ;; esac
case "$secrets_dir" in ''|/*) ;; *) fail "KEEL_BOOT_SECRETS_DIR must be an absolute path" ;; esac
if [ -n "$root" ] && [ "$use_systemd" = 1 ]; then fail "KEEL_BOOT_ROOT needs KEEL_BOOT_SYSTEMD=0: the units name /etc/keel"; fi
`;

/** apt_install PACKAGE...: installs those that are not installed yet (one apt-get update at most). */
export const aptShell = `
apt_updated=0
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='\${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\\n' "$p"
  done
}
apt_install() {
  local missing=()
  mapfile -t missing < <(missing_packages "$@")
  [ "\${#missing[@]}" -eq 0 ] && return 0
  log "installing \${missing[*]}"
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "\${missing[@]}"
}
`;

/** Node.js 20 from NodeSource unless a recent enough one is there. */
export const nodejsShell = `
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 20 ]; then
  [ "$keel_nodejs" = nodesource ] || fail "Node.js 20 or later is missing (nodejs: present)"
  log "installing Node.js 20 from NodeSource"
  apt_install gnupg
  curl -fsSL --proto '=https' https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /usr/share/keyrings/nodesource.gpg
  chmod 0644 /usr/share/keyrings/nodesource.gpg
  printf 'deb [signed-by=/usr/share/keyrings/nodesource.gpg] https://deb.nodesource.com/node_20.x nodistro main\\n' > /etc/apt/sources.list.d/nodesource.list
  chmod 0644 /etc/apt/sources.list.d/nodesource.list
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs
  [ "$(node_major)" -ge 20 ] || fail "Node.js 20 did not install"
fi
`;

/**
 * Keel at $root/opt/keel (a link to a path, or a checked tarball unpacked beside it and moved in place), a
 * root-only staging directory on tmpfs for the secrets, and /usr/local/bin/keel. `helper` is the boot program
 * under dist/ the user data runs next: its absence means an unbuilt Keel.
 */
export function keelInstallShell(helper: string): string {
  return `
keel_home="$root/opt/keel"
staging=$(mktemp -d /run/keel-boot.XXXXXX)
trap 'rm -rf -- "$staging"' EXIT
case "$keel_source_kind" in
  path)
    [ -f "$keel_source/bin/keel.js" ] || fail "no Keel at $keel_source (bin/keel.js is missing)"
    if [ "$keel_source" != "$keel_home" ]; then
      mkdir -p "$root/opt"
      [ ! -e "$keel_home" ] || [ -L "$keel_home" ] || fail "$keel_home exists and is not a link to $keel_source"
      ln -sfn "$keel_source" "$keel_home"
    fi
    ;;
  url|s3)
    stamp="$keel_home/.keel-source"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$keel_source $keel_source_sha256" ]; then
      log "installing Keel from $keel_source"
      if [ "$keel_source_kind" = url ]; then
        curl -fsSL --proto '=https' --retry 5 -o "$staging/keel.tar.gz" "$keel_source"
      else
        aws s3 cp --region "$keel_region" --only-show-errors "$keel_source" "$staging/keel.tar.gz"
      fi
      if [ -n "$keel_source_sha256" ]; then
        printf '%s  %s\\n' "$keel_source_sha256" "$staging/keel.tar.gz" | sha256sum -c --quiet - || fail "the Keel tarball does not match its sha256"
      fi
      rm -rf -- "$keel_home.new"
      mkdir -p "$keel_home.new"
      tar -xzf "$staging/keel.tar.gz" -C "$keel_home.new" --strip-components=1 --no-same-owner
      if [ ! -f "$keel_home.new/bin/keel.js" ] || [ ! -d "$keel_home.new/node_modules" ]; then
        fail "the Keel tarball holds no bin/keel.js or node_modules/"
      fi
      chmod -R go-w "$keel_home.new"
      printf '%s %s\\n' "$keel_source" "$keel_source_sha256" > "$keel_home.new/.keel-source"
      rm -rf -- "$keel_home.old"
      if [ -e "$keel_home" ]; then mv -- "$keel_home" "$keel_home.old"; fi
      mv -- "$keel_home.new" "$keel_home"
      rm -rf -- "$keel_home.old"
    fi
    ;;
  *) fail "unknown Keel source kind $keel_source_kind" ;;
esac
[ -f "$keel_home/dist/${helper}" ] || fail "$keel_home has no dist/${helper} (an unbuilt Keel?)"
if [ "$use_systemd" = 1 ]; then
  printf '#!/bin/sh\\nexec /usr/bin/node /opt/keel/bin/keel.js "$@"\\n' > /usr/local/bin/keel
  chmod 0755 /usr/local/bin/keel
fi
`;
}

/**
 * imds PATH: one instance metadata value through an IMDSv2 session token. Then $address: the instance's private
 * IPv4 address from the metadata, whose zone must be $keel_zone, unless a test host gave KEEL_BOOT_ADDRESS.
 */
export const instanceAddressShell = `
imds() {
  local token
  token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token) || return 1
  curl -fsS -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}
if [ -z "$address" ]; then
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    address=$(imds local-ipv4) && break
    log "instance metadata not answering (attempt $attempt)"
    sleep 3
  done
  zone=$(imds placement/availability-zone) || fail "no availability zone from the instance metadata"
  [ "$zone" = "$keel_zone" ] || fail "this instance is in $zone, its options say $keel_zone"
fi
[[ "$address" =~ ^[0-9]{1,3}(\\.[0-9]{1,3}){3}$ ]] || fail "no private IPv4 address (got '$address')"
`;

/**
 * fetch_secret KEY PARAMETER: the parameter's value into $staging/KEY, from SSM through the instance role
 * (decrypted), or from KEEL_BOOT_SECRETS_DIR's file of that name in a test host.
 */
export const fetchSecretShell = `
fetch_secret() {
  local key=$1 parameter=$2 attempt
  if [ -n "$secrets_dir" ]; then
    cat -- "$secrets_dir$parameter" > "$staging/$key" || fail "no $secrets_dir$parameter"
    return 0
  fi
  for attempt in 1 2 3 4 5; do
    if aws ssm get-parameter --region "$keel_region" --with-decryption --name "$parameter" \\
        --query Parameter.Value --output text > "$staging/$key"; then
      return 0
    fi
    log "cannot read SSM parameter $parameter yet (attempt $attempt)"
    sleep $((attempt * 2))
  done
  fail "cannot read SSM parameter $parameter: does the instance role allow ssm:GetParameter and kms:Decrypt on it?"
}
for ((i = 0; i < \${#secret_parameters[@]}; i += 2)); do
  fetch_secret "\${secret_parameters[i]}" "\${secret_parameters[i + 1]}"
done
`;
