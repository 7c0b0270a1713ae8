#!/usr/bin/env bash
# Installs what only the benchmarks need on Debian 12, idempotently: Patroni
# (Debian's 3.0.2), which bench/switchover.bench.ts runs beside Keel for its
# reference figures. Does nothing when it is there already.
set -euo pipefail

packages=(
  patroni   # its etcd3 support (python3-etcd3 / grpc) comes with it
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup-bench: installing ${missing[*]}"
  $sudo apt-get update -qq
  # The package may try to start a patroni service; it has no configuration, and the bench runs its own.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
