#!/usr/bin/env bash
# Before `docker build`: a Docker 23+ client builds with BuildKit through its buildx plugin and,
# without it, fails with "BuildKit is enabled but the buildx component is missing or broken".
# Say in one line what to install instead. Older clients (Debian's docker.io 20.10) build with
# BuildKit on their own (DOCKER_BUILDKIT=1). Usage: check-buildkit.sh [DOCKER]
set -uo pipefail
docker="${1:-docker}"
"$docker" buildx version >/dev/null 2>&1 && exit 0
# Prints the client's version even when no engine answers.
version="$("$docker" version --format '{{.Client.Version}}' 2>/dev/null | head -n 1)"
major="${version%%.*}"
if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 23)); then
  echo "error: $docker (client $version) needs the buildx plugin to build the image: install it" \
    "(Debian/Ubuntu: apt-get install docker-buildx, or docker-buildx-plugin from Docker's repository)," \
    "or build with a client that has BuildKit built in, e.g. Debian's docker.io: make image DOCKER=/usr/bin/docker" >&2
  exit 1
fi
exit 0
