#!/bin/sh
# A Debian 12 base image made locally, for hosts that cannot reach Docker Hub:
#   packaging/container/base.sh [TAG] [ROOTFS]   (make container-base)
# debootstrap --variant=minbase into ROOTFS, imported as TAG (default
# localhost/debian:bookworm, the BASE build argument's value in the Makefile).
# The mirror is the first URIs: (deb822) or deb line of apt's own sources.
set -eu
tag=${1:-localhost/debian:bookworm}
root=${2:-build/container/rootfs}
engine=${CONTAINER:-podman}
if $engine image exists "$tag" 2>/dev/null; then
    echo "$tag exists"; exit 0
fi
mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb  *\(http[^ ]*\)  *bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
rm -rf "$root" && mkdir -p "$root"
debootstrap --variant=minbase bookworm "$root" "$mirror"
# apt's lists and the downloaded .debs are not part of an image
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | $engine import - "$tag"
rm -rf "$root"
