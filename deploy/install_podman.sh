#!/usr/bin/env bash
# Install podman (with runc) and debootstrap on Debian/Ubuntu, and write the container settings
# sandboxed machines like CI's need (../shared/reference/containers.md): storage driver, OCI
# runtime, cgroup manager and ulimits, each probed. Idempotent; installing needs root.
#
#   deploy/install_podman.sh            install if missing, configure
#   deploy/install_podman.sh --check    exit 0 when podman is usable, 1 otherwise (installs nothing)
#
#   SEARCH_REGISTRIES   where podman looks up image names without a registry (python:3.11-slim, the
#                       base `make container` uses), comma-separated host names, e.g. your registry
#                       mirror; unset: left to the machine's own /etc/containers/registries.conf
set -euo pipefail

usable() { command -v podman >/dev/null && podman info >/dev/null 2>&1; }

if [[ "${1:-}" == "--check" ]]; then
    usable
    exit
fi

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install_podman.sh: podman, runc and debootstrap are missing; run this script as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends podman runc debootstrap ca-certificates uidmap
fi

# Settings for sandboxes and containers-in-VMs like CI's (../shared/reference/containers.md), each
# chosen by probing this machine rather than assumed. Written only where no such file exists, so a
# machine with its own podman setup keeps it.
if [[ $(id -u) -eq 0 ]]; then
    mkdir -p /etc/containers
    if [[ ! -f /etc/containers/storage.conf ]]; then
        # overlay when the kernel lets us mount it, else vfs (works anywhere; copies every layer)
        probe=$(mktemp -d /tmp/overlay-probe.XXXXXX)
        mkdir -p "$probe"/{lower,upper,work,merged}
        driver=vfs
        if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" 2>/dev/null; then
            umount "$probe/merged"
            driver=overlay
        fi
        rm -rf "$probe"
        printf '# written by visionzoo deploy/install_podman.sh (probed)\n[storage]\ndriver = "%s"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' \
            "$driver" > /etc/containers/storage.conf
    fi
    if [[ ! -f /etc/containers/containers.conf ]]; then
        {
            echo "# written by visionzoo deploy/install_podman.sh (probed)"
            echo "[containers]"
            # podman's default rlimits (1048576 open files) exceed what some sandboxes allow
            hard_files=$(ulimit -Hn)
            if [[ "$hard_files" != unlimited && "$hard_files" -lt 1048576 ]]; then
                files=$(( hard_files < 65536 ? hard_files : 65536 ))
                echo "default_ulimits = [\"nofile=$files:$files\", \"nproc=4096:4096\"]"
            fi
            echo "[engine]"
            # crun refuses hybrid (v1 + v2) cgroups; runc handles both
            [[ $(stat -fc %T /sys/fs/cgroup) != cgroup2fs ]] && echo 'runtime = "runc"'
            # without systemd as init, podman must manage cgroups itself and log events to a file
            if [[ ! -d /run/systemd/system ]]; then
                echo 'cgroup_manager = "cgroupfs"'
                echo 'events_logger = "file"'
            fi
        } > /etc/containers/containers.conf
    fi
    # Image names without a registry ("python:3.11-slim"): searched in $SEARCH_REGISTRIES when given.
    if [[ -n "${SEARCH_REGISTRIES:-}" && -d /etc/containers/registries.conf.d ]]; then
        quoted=$(printf '"%s", ' ${SEARCH_REGISTRIES//,/ })
        echo "unqualified-search-registries = [${quoted%, }]" > /etc/containers/registries.conf.d/00-visionzoo.conf
    fi
fi

podman --version
usable || { echo "install_podman.sh: podman is installed but 'podman info' fails" >&2; podman info; exit 1; }
