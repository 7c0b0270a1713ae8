#!/usr/bin/env bash
# Installs what Keel needs on Debian 12, idempotently: Debian packages, npm
# dependencies, the compiled code. Safe to run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  postgresql-15 postgresql-15-postgis-3 postgresql-client-15
  etcd-server etcd-client
  haproxy
  pgbouncer    # the router's pooled rw endpoint (Debian's 1.18, transaction mode)
  iproute2 iptables
  systemd   # systemd-analyze checks deploy/systemd's units (test/unit/systemd-units.test.ts)
  shellcheck   # checks the EC2 user data script (test/unit/aws-userdata.test.ts)
  pgbackrest   # backups, WAL archiving and point-in-time recovery (Debian's 2.45)
  chromium     # the dashboard's browser tests (playwright-core drives it by its path)
  prometheus   # promtool checks the metrics and alert rules (test/integration/metrics.test.ts)
)
if [ "${KEEL_SETUP_PYTHON:-1}" = 1 ]; then
  packages+=(python3 python3-django python3-psycopg2 gdal-bin libgdal32 libgeos-c1v5 libproj25)
fi

bash scripts/apt-install.sh setup "${packages[@]}"

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.keel-lock-hash
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

npx tsc -p tsconfig.json
