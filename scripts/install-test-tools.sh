#!/usr/bin/env bash
# Debian packages some tests use, installed when missing (as root; CI runs as root):
#   libfaketime     a worker host with a skewed clock in the multi-host suite (tests/multihost)
#   docker-compose  `docker-compose config` checks docker-compose.yml (tests/test_compose.py)
#   nginx           a real web server serving byte ranges for source_url (tests/test_fetch.py)
#   prometheus      promtool and a real Prometheus for the alerting rules (tests/test_deploy.py)
#   kubernetes-client  `kubectl kustomize` renders deploy/kubernetes (tests/test_deploy.py);
#                   only where no kubectl is installed (any kubectl with kustomize will do)
#   podman, runc, debootstrap  docker-compose.yml run for real (tests/test_compose_podman.py):
#                   runc because crun refuses mixed cgroup v1/v2 hosts; debootstrap makes the
#                   base image where none can be pulled (scripts/podman-base-image.sh);
#                   golang-github-containernetworking-plugin-dnsname: service names resolve on
#                   podman's CNI networks (Debian 12's podman 4.3 uses CNI)
# Not root, or no apt-get: say what is missing; the tests that need it skip and say why.
set -euo pipefail
missing=()
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1 ] \
  || missing+=(libfaketime)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
[ -e /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "not installed: ${missing[*]} (sudo apt-get install -y ${missing[*]}); the tests that need them skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
