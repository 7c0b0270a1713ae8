#!/usr/bin/env bash
# Installs what the GeoDjango example and its integration test need, from
# Debian 12's packages only (PyPI is not reachable where Keel is built).
# Idempotent: when every package is already installed it changes nothing and
# does not touch the network, so `make` can call it on every run.
set -euo pipefail

# GeoDjango loads GDAL, GEOS and PROJ through ctypes at import time, so the
# shared libraries matter as much as the Python modules.
packages=(
  python3-django
  python3-psycopg2
  gdal-bin
  libgdal32
  python3-gdal
  libgeos-c1v5
  libproj25
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

# Debian's modules live in /usr/lib/python3/dist-packages, which only Debian's
# interpreter sees (a pyenv or venv python3 earlier on PATH does not).
python="${KEEL_PYTHON:-/usr/bin/python3}"

check_imports() {
  "$python" - <<'PY'
import django, psycopg2
from django.contrib.gis.gdal import gdal_version
from django.contrib.gis.geos import geos_version
print(f"setup-python: Django {django.get_version()}, psycopg2 {psycopg2.__version__.split()[0]}, "
      f"GDAL {gdal_version().decode()}, GEOS {geos_version().decode()}")
PY
}

if [ "${#missing[@]}" -eq 0 ]; then
  check_imports
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-python: missing ${missing[*]}; run this script as root (or: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi

echo "setup-python: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

# A package can install and still fail to import (a broken ctypes library): say so now, not in a test.
check_imports
