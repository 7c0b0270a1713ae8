#!/usr/bin/env bash
# Installs what only the benchmarks need on Debian 12, idempotently: Patroni
# (Debian's 3.0.2), which bench/switchover.bench.ts runs beside Keel for its
# reference figures. Its package may try to start a patroni service; it has no
# configuration, and the bench runs its own.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/apt-install.sh setup-bench patroni
