#!/usr/bin/env bash
# Make a Docker engine and a tiny local base image available for the `docker`-marked tests.
# Runs as root on a fresh Debian 12 machine that reaches only the Debian mirror (no Docker Hub).
# Idempotent: every step is skipped when its result is already there.
set -euo pipefail

BASE_TAG="${TITANBENCH_TEST_BASE_IMAGE:-titanbench-test-base:bookworm-minbase}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/titanbench-dockerd.log}"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io debootstrap
fi

# Debian's docker.io package, not a static client that may come first on PATH.
docker() { /usr/bin/docker "$@"; }

if ! docker info >/dev/null 2>&1; then
  # No systemd in CI containers and sandboxes: start the daemon directly. Containers here only
  # need the host network, so dockerd must not require iptables (missing or denied in sandboxes).
  setsid dockerd --iptables=false >>"$DOCKERD_LOG" 2>&1 < /dev/null &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -n 30 "$DOCKERD_LOG" >&2; echo "dockerd did not start" >&2; exit 1; }
fi

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR"
  tar -C "$rootfs" -c . | docker import - "$BASE_TAG"
fi
echo "docker engine ready; test base image: $BASE_TAG"
