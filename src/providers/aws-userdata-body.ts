/**
 * The bash body of a database node's user data (aws-userdata.ts puts the
 * node's own variables above it). Kept apart from the TypeScript that fills
 * those in: it is a script, checked by shellcheck in the tests.
 */
/**
 * The steps every node runs, the same for each (what differs is in the variables above it). Each step skips
 * what is already there, so running it again, or on a host that has the packages, does only what is missing.
 */
export const nodeBootBody = `
log() { printf 'keel-boot: %s\\n' "$*" >&2; }
fail() { log "$*"; exit 1; }

root="\${KEEL_BOOT_ROOT:-}"
secrets_dir="\${KEEL_BOOT_SECRETS_DIR:-}"
address="\${KEEL_BOOT_ADDRESS:-}"
instance_id="\${KEEL_BOOT_INSTANCE_ID:-}"
data_device="\${KEEL_BOOT_DATA_DEVICE:-}"
use_systemd="\${KEEL_BOOT_SYSTEMD:-1}"

[ "$(id -u)" -eq 0 ] || fail "run as root (cloud-init does)"
case "$root" in ''|/*) ;; *) fail "KEEL_BOOT_ROOT must be an absolute path" ;; esac
case "$secrets_dir" in ''|/*) ;; *) fail "KEEL_BOOT_SECRETS_DIR must be an absolute path" ;; esac
if [ -n "$root" ] && [ "$use_systemd" = 1 ]; then fail "KEEL_BOOT_ROOT needs KEEL_BOOT_SYSTEMD=0: the units name /etc/keel"; fi

# ---- packages (only the missing ones) ----
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

if ! dpkg-query -W -f='\${Status}' postgresql-common 2>/dev/null | grep -q 'install ok installed'; then
  # Debian would create and start its own cluster on 5432; Keel's agent makes and runs the node's PostgreSQL
  mkdir -p /etc/postgresql-common/createcluster.d
  printf 'create_main_cluster = false\\n' > /etc/postgresql-common/createcluster.d/keel.conf
  chmod 0644 /etc/postgresql-common/createcluster.d/keel.conf
fi
apt_install ca-certificates curl postgresql-15 postgresql-15-postgis-3 postgresql-client-15
if [ -z "$secrets_dir" ] || [ "$keel_source_kind" = s3 ]; then
  command -v aws >/dev/null || apt_install awscli
fi

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

# ---- Keel itself ----
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
[ -f "$keel_home/dist/providers/aws-boot.js" ] || fail "$keel_home has no dist/providers/aws-boot.js (an unbuilt Keel?)"
if [ "$use_systemd" = 1 ]; then
  printf '#!/bin/sh\\nexec /usr/bin/node /opt/keel/bin/keel.js "$@"\\n' > /usr/local/bin/keel
  chmod 0755 /usr/local/bin/keel
fi

# ---- the node's address, from the instance metadata (IMDSv2) ----
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

if [ -z "$instance_id" ]; then
  instance_id=$(imds instance-id) || fail "no instance id from the instance metadata"
fi

# ---- the data volume: ext4 labelled keel-data on /var/lib/keel (a test host without KEEL_BOOT_DATA_DEVICE has none) ----
if [ -z "$root" ] || [ -n "$data_device" ]; then
  if [ -z "$data_device" ]; then
    root_disk=$(lsblk -no PKNAME "$(findmnt -no SOURCE /)" | head -n 1)
    for attempt in $(seq 1 60); do
      # the one disk that is not the root volume's (EC2 names it /dev/sdf; Nitro instances show it as NVMe)
      data_device=$(lsblk -dpno NAME,TYPE | awk -v skip="/dev/$root_disk" '$2 == "disk" && $1 != skip { print $1; exit }')
      [ -n "$data_device" ] && break
      log "waiting for the data volume (attempt $attempt)"
      sleep 2
    done
    [ -n "$data_device" ] || fail "no data volume: no disk beside the root volume's $root_disk"
  fi
  [ -b "$data_device" ] || fail "$data_device is not a block device"
  fs_type=$(blkid -o value -s TYPE "$data_device" || true)
  fs_label=$(blkid -o value -s LABEL "$data_device" || true)
  table_type=$(blkid -o value -s PTTYPE "$data_device" || true)
  if [ -z "$fs_type" ] && [ -z "$table_type" ]; then
    log "formatting the data volume $data_device (ext4, label keel-data)"
    mkfs.ext4 -q -L keel-data "$data_device"
  elif [ "$fs_type" != ext4 ] || [ "$fs_label" != keel-data ]; then
    # never format what holds something else: a volume brought from elsewhere is the operator's to look at
    fail "$data_device holds \${fs_type:-a $table_type partition table} (label '\${fs_label}'), not Keel's ext4 keel-data: not touching it"
  fi
  mkdir -p "$root/var/lib/keel"
  if ! mountpoint -q "$root/var/lib/keel"; then
    mount -t ext4 -o noatime,nodev,nosuid "$data_device" "$root/var/lib/keel"
  fi
  chmod 0755 "$root/var/lib/keel"
  if [ -z "$root" ] && ! grep -q '^LABEL=keel-data ' /etc/fstab; then
    printf 'LABEL=keel-data /var/lib/keel ext4 noatime,nodev,nosuid,nofail 0 2\n' >> /etc/fstab
  fi
fi

# ---- wait until the controller has given this instance its credentials (it writes the instance id last) ----
read_parameter() {
  if [ -n "$secrets_dir" ]; then
    cat -- "$secrets_dir$1" 2>/dev/null
  else
    aws ssm get-parameter --region "$keel_region" --name "$1" --query Parameter.Value --output text 2>/dev/null
  fi
}
holder=''
for ((attempt = 1; attempt <= 300; attempt++)); do
  holder=$(read_parameter "$instance_id_parameter" || true)
  [ "$holder" = "$instance_id" ] && break
  if [ $((attempt % 30)) -eq 1 ]; then log "waiting for the credentials of $instance_id ($instance_id_parameter)"; fi
  sleep 1
done
[ "$holder" = "$instance_id" ] || fail "no credentials for $instance_id after 300 s: $instance_id_parameter names '\${holder:-nothing}'"

# ---- secrets and certificates, by name, into a root-only staging directory on tmpfs ----
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

# ---- /etc/keel, /var/lib/keel: written by Keel's own code (modes and owners set on the descriptor) ----
mkdir -p "$root/etc/keel"
chmod 0755 "$root/etc/keel"
printf '%s\\n' "$keel_options" > "$root/etc/keel/aws-node.json"
chmod 0644 "$root/etc/keel/aws-node.json"
/usr/bin/env node "$keel_home/dist/providers/aws-boot.js" --options "$root/etc/keel/aws-node.json" \\
  --staging "$staging" --address "$address" --root "$root"
[ -f "$root/etc/keel/node.yml" ] || fail "aws-boot.js wrote no $root/etc/keel/node.yml"

# ---- the units: the guard before the agent, then the router ----
if [ "$use_systemd" != 1 ]; then
  log "node $keel_node of $keel_cluster is ready in '$root'; not starting units (KEEL_BOOT_SYSTEMD=$use_systemd)"
  exit 0
fi
[ -x /usr/bin/node ] || fail "the units run /usr/bin/node, which is missing"
install -m 0644 "$keel_home/deploy/systemd/keel-guard@.service" "$keel_home/deploy/systemd/keel-agent@.service" \\
  "$keel_home/deploy/systemd/keel-router.service" /etc/systemd/system/
systemctl daemon-reload
# Debian's umbrella unit for its own clusters: Keel's agent runs the node's PostgreSQL
systemctl disable --now postgresql.service >/dev/null 2>&1 || true
systemctl enable --now "keel-guard@$keel_instance.service"
systemctl enable --now "keel-agent@$keel_instance.service"
if [ "$keel_router" = 1 ]; then
  systemctl enable --now keel-router.service
fi
log "node $keel_node of $keel_cluster started (guard, agent$([ "$keel_router" = 1 ] && echo ', router'))"
`;
