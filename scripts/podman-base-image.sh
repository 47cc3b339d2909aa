#!/usr/bin/env bash
# A Debian base image made here, for hosts that run podman but cannot pull from a registry
# (tests/test_compose_podman.py): debootstrap (minbase) of the host's Debian release with
# python3 + venv, imported with `podman import`. The root file system is kept as a tarball
# under $REVIEWSCORE_PODMAN_CACHE (default /var/tmp/reviewscore-podman), so a second run
# only imports it again when podman's storage lost the image.
#   usage: scripts/podman-base-image.sh [IMAGE]     (default localhost/reviewscore-base:latest)
set -euo pipefail
image=${1:-localhost/reviewscore-base:latest}
cache=${REVIEWSCORE_PODMAN_CACHE:-/var/tmp/reviewscore-podman}
suite=${REVIEWSCORE_DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
mirror=${REVIEWSCORE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball="$cache/base-$suite.tar"
mkdir -p "$cache"
if podman image exists "$image"; then
  exit 0
fi
if [ ! -s "$tarball" ]; then
  root="$cache/rootfs-$suite"
  rm -rf "$root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # Security updates as the public images have them; then only what an image needs.
  if [ -n "${REVIEWSCORE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}" ]; then
    echo "deb ${REVIEWSCORE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security} $suite-security main" \
      >>"$root/etc/apt/sources.list"
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc \
    "$root"/usr/share/man "$root"/usr/share/locale
  tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
  rm -rf "$root"
fi
podman import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
