#!/usr/bin/env bash
# A private Docker engine for tests and CI, and the stand-in base image the Dockerfile builds on.
#
#   scripts/docker-engine.sh start        start dockerd (if not running); print DOCKER_HOST=...
#   scripts/docker-engine.sh stop         stop that dockerd by its pid and remove its cgroups
#   scripts/docker-engine.sh status       exit 0 when the engine answers
#   scripts/docker-engine.sh base-image   make sure `python:3.11-slim` exists (pull, else build a stand-in)
#
# Why private: the machine may have no Docker daemon, and several users share it, so each engine
# gets its own socket, pidfile, exec-root and cgroup parent, and never creates a bridge network
# (containers here must use `--network host`). Images live in a cached data-root so reruns keep
# the base image and the build cache.
#
# Environment: IWEBLENS_DOCKER_NAME (default "iweblens") names the engine, so two users can each run
# one; IWEBLENS_DOCKER_CACHE (default ~/.cache/iweblens/docker) holds data-root and the rootfs.
set -euo pipefail

NAME="${IWEBLENS_DOCKER_NAME:-iweblens}"
CACHE="${IWEBLENS_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iweblens/docker}"
# exec-root holds unix sockets, whose paths must stay short; /tmp also empties on reboot, which
# is what runtime state needs.
RUN_DIR="/tmp/${NAME}-docker"
SOCKET="$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
DATA_ROOT="$CACHE/data-$NAME"
CGROUP_PARENT="${NAME}-docker"
BASE_IMAGE="python:3.11-slim"
# Python's headers are in, as in the real python:3.11-slim (the C letterbox builds against them);
# the names changed with that, so a cached rootfs without them is not reused.
ROOTFS_TAR="$CACHE/debian-bookworm-python3-dev.tar"
ROOTFS_IMAGE="local/debian-python3-dev:bookworm"
START_TIMEOUT_S=60

export DOCKER_HOST="unix://$SOCKET"

say() { echo "docker-engine: $*" >&2; }

engine_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
    if engine_pid >/dev/null && answers; then
        echo "DOCKER_HOST=$DOCKER_HOST"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        say "dockerd needs root here (no rootless setup); cannot start"
        return 3
    fi
    for tool in dockerd docker; do
        command -v "$tool" >/dev/null || { say "$tool is not installed (apt-get install docker.io)"; return 3; }
    done
    mkdir -p "$RUN_DIR" "$DATA_ROOT"
    # No iptables and no bridge: dockerd then creates no network interfaces or firewall rules,
    # and only host/none networking is available, which is all the tests use.
    dockerd \
        --iptables=false --ip6tables=false --bridge=none \
        --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" \
        --host "$DOCKER_HOST" --pidfile "$PIDFILE" \
        --cgroup-parent "$CGROUP_PARENT" \
        >"$RUN_DIR/dockerd.log" 2>&1 &
    local launched=$! waited=0
    until answers; do
        if ! kill -0 "$launched" 2>/dev/null; then
            say "dockerd exited; last lines of $RUN_DIR/dockerd.log:"
            tail -n 15 "$RUN_DIR/dockerd.log" >&2
            return 3
        fi
        [ "$waited" -ge "$START_TIMEOUT_S" ] && { say "dockerd did not answer within ${START_TIMEOUT_S}s"; stop; return 3; }
        sleep 1
        waited=$((waited + 1))
    done
    echo "DOCKER_HOST=$DOCKER_HOST"
}

remove_cgroups() {
    # Containers are gone once dockerd has stopped them; their (now empty) parent cgroups are not.
    local dir
    for dir in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
        [ -d "$dir" ] || continue
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

unmount_leftovers() {
    # dockerd bind-mounts the host's network namespace under its exec-root and leaves it mounted.
    local mount_point
    while mount_point="$(awk -v root="$RUN_DIR/" 'index($2, root) == 1 { print $2 }' /proc/self/mounts \
        | sort -r | head -n 1)" && [ -n "$mount_point" ]; do
        umount "$mount_point" 2>/dev/null || umount -l "$mount_point" || break
    done
}

stop() {
    local pid
    if pid="$(engine_pid)"; then
        # Stop our containers first so dockerd exits promptly instead of waiting on them.
        docker ps -q | xargs -r docker stop --time 5 >/dev/null 2>&1 || true
        kill -TERM "$pid"
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "dockerd $pid ignored SIGTERM for 30s; killing it"
            kill -KILL "$pid"
        fi
    fi
    remove_cgroups
    unmount_leftovers
    rm -f "$PIDFILE" "$SOCKET"
}

mirror() {
    # The Debian mirror apt already uses (deb822 or one-line format); the public one otherwise.
    local found
    found="$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | head -n 1 || true)"
    echo "${found:-http://deb.debian.org/debian}"
}

base_image() {
    answers || { say "engine is not running; run '$0 start' first"; return 3; }
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        # The real image has Python's headers; a stand-in cached before they were needed does
        # not, and the C letterbox would then fail to build: replace it.
        docker run --rm --network none "$BASE_IMAGE" python3 -c \
            'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
            && return 0
        say "$BASE_IMAGE has no Python headers (an older stand-in): building it again"
        docker rmi --force "$BASE_IMAGE" >/dev/null
    fi
    # Never pulled: no registry is reachable from CI, and a pull would leave loopback.
    say "building a local stand-in for $BASE_IMAGE from Debian bookworm's python3 (3.11)"
    if [ ! -s "$ROOTFS_TAR" ]; then
        command -v debootstrap >/dev/null || { say "debootstrap is not installed"; return 3; }
        local rootfs
        rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-pip,python-is-python3,libpython3-dev,ca-certificates \
            bookworm "$rootfs" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1 \
            || { say "debootstrap failed; see $CACHE/debootstrap.log"; rm -rf "$rootfs"; return 3; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$ROOTFS_TAR.tmp" .
        rm -rf "$rootfs"
        mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    fi
    docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1 || docker import "$ROOTFS_TAR" "$ROOTFS_IMAGE" >/dev/null
    # The host's CA bundle goes in because package registries here sit behind a TLS-intercepting
    # proxy. It belongs to this test stand-in only; the real base image needs nothing of the sort.
    local context
    context="$(mktemp -d)"
    cp /etc/ssl/certs/ca-certificates.crt "$context/"
    cat >"$context/Dockerfile" <<DOCKERFILE
FROM $ROOTFS_IMAGE
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
DOCKERFILE
    DOCKER_BUILDKIT=0 docker build --quiet --network none --tag "$BASE_IMAGE" "$context" >/dev/null
    rm -rf "$context"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    base-image) base_image ;;
    *) echo "usage: $0 start|stop|status|base-image" >&2; exit 2 ;;
esac
