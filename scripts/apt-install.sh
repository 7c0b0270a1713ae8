#!/usr/bin/env bash
# Installs the Debian packages named after the label that are missing, idempotently:
#   bash scripts/apt-install.sh LABEL PACKAGE...
# Nothing happens (no apt-get at all) when every one is installed already.
set -euo pipefail
label=$1
shift

missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "$label: installing ${missing[*]}"
  $sudo apt-get update -qq
  # Debian's packages start their own default services where they can; Keel (and its benches) run their own.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
