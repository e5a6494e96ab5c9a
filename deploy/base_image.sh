#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim when Docker Hub is out of reach: Debian bookworm
# (whose python3 is 3.11, the version the project pins) from Debian's own mirror via debootstrap,
# plus python3, CA certificates and uv (copied from the host, so the Bento build needs no
# `pip install uv`). Used by `make container-test`; users build on python:3.11-slim instead.
#
#   deploy/base_image.sh [IMAGE]      default IMAGE: localhost/visionzoo-base:bookworm-py3.11
# The Debian mirror: DEBIAN_MIRROR, else the first one this machine's apt sources name.
# Needs root, podman and debootstrap (deploy/install_podman.sh). Skips work that is done already.
set -euo pipefail

IMAGE=${1:-localhost/visionzoo-base:bookworm-py3.11}
DEBIAN_IMAGE=localhost/debian-bookworm:min
configured_mirror() {
    # deb822 (*.sources: "URIs: ...") or one-line (sources.list: "deb URI suite ..."), main archive first
    { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true
      grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; break}}' || true
    } | { grep -v -- '-security' || true; } | head -n 1 || true
}
MIRROR=${DEBIAN_MIRROR:-$(configured_mirror)}
if [[ -z "$MIRROR" ]]; then
    echo "base_image.sh: no Debian mirror: set DEBIAN_MIRROR=<your mirror's URL> (none found in /etc/apt/sources*)" >&2
    exit 1
fi
HERE=$(cd "$(dirname "$0")" && pwd)

if podman image exists "$IMAGE"; then
    echo "base image $IMAGE exists"
    exit 0
fi

if ! podman image exists "$DEBIAN_IMAGE"; then
    rootfs=$(mktemp -d /tmp/visionzoo-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "debootstrap bookworm from $MIRROR (about a minute)"
    chmod 755 "$rootfs"  # mktemp's 0700 would become the image's / and lock out non-root users
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$DEBIAN_IMAGE" >/dev/null
fi

uv_binary=$(command -v uv || true)
if [[ -z "$uv_binary" ]]; then
    echo "base_image.sh: uv not found on PATH (it is in the dev extra; export PATH=.venv/bin:\$PATH)" >&2
    exit 1
fi
context=$(mktemp -d /tmp/visionzoo-base.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp "$uv_binary" "$context/uv"
cp "$HERE/base.Containerfile" "$context/Containerfile"
podman build --network=host --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$IMAGE" "$context"
