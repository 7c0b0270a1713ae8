/**
 * The bash body of a database node's user data (aws-userdata.ts puts the
 * node's own variables above it): the steps every Keel instance shares
 * (aws-boot-shell.ts), then a node's own: PostgreSQL's packages, its data
 * volume, waiting for the credentials the controller writes for this
 * instance, node.yml and the units. Each step skips what is already there, so
 * running it again, or on a host that has the packages, does only what is
 * missing. Checked by shellcheck in the tests.
 */
import { aptShell, bootPreludeShell, fetchSecretShell, instanceAddressShell, keelInstallShell, nodejsShell } from './aws-boot-shell.js';

/** PostgreSQL 15 with PostGIS, without Debian's own cluster; the AWS CLI where SSM or S3 is read. */
const packagesShell = `
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
`;

/**
 * The instance id (IMDSv2, or KEEL_BOOT_INSTANCE_ID), the data volume, then waiting until the controller has
 * written this instance's credentials: it writes the instance id last.
 */
const volumeAndCredentialsShell = `
instance_id="\${KEEL_BOOT_INSTANCE_ID:-}"
data_device="\${KEEL_BOOT_DATA_DEVICE:-}"
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
`;

/** node.yml and the keys by aws-boot.js, then the guard, the agent and the router's units. */
const nodeFilesAndUnitsShell = `
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

export const nodeBootBody = [
  bootPreludeShell,
  '\n# ---- packages (only the missing ones) ----',
  aptShell,
  packagesShell,
  nodejsShell,
  '\n# ---- Keel itself ----',
  keelInstallShell('providers/aws-boot.js'),
  '\n# ---- the node\'s address, from the instance metadata (IMDSv2) ----',
  instanceAddressShell,
  volumeAndCredentialsShell,
  '\n# ---- secrets and certificates, by name, into a root-only staging directory on tmpfs ----',
  fetchSecretShell,
  nodeFilesAndUnitsShell,
].join('');
