#!/usr/bin/env bash
# Debian's wrk for `make bench`: a native HTTP load generator, so the singles rows measure the
# service and not a Python client. The benchmark falls back to a (labelled) Python generator
# where wrk cannot be installed.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "wrk is missing: run 'sudo apt-get install -y wrk' (make bench drives singles with it;" \
    "without it the singles rows use a slower Python generator)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq wrk >/dev/null
command -v wrk
