#!/usr/bin/env bash
# CI, the image: build the release image through the Makefile, as a user does, then use it.
# Substituted, and only these, each through the existing build args: a debootstrap Debian bookworm
# base (python3.11 and the same package names) as both CUDA bases; torchtitan served from the test
# bundle in ../shared/torchtitan/ over git on 127.0.0.1, with that bundle's commit as
# TORCHTITAN_COMMIT; the machine's CA bundle as EXTRA_CA_CERT (a TLS-inspecting proxy is in the way).
# Then: plan --validate and doctor in the image, the CPU smoke, and no CA, token or proxy setting
# in any layer. Runs as root after .ci/setup-docker.sh. Re-runs reuse the base image and BuildKit's
# cache; a fresh machine builds everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's docker.io client: BuildKit without the buildx plugin.
DOCKER=/usr/bin/docker
BASE_TAG="${TITANBENCH_CI_BASE_IMAGE:-titanbench-ci-base:bookworm}"
TEST_BASE_TAG="${TITANBENCH_TEST_BASE_IMAGE:-titanbench-test-base:bookworm-minbase}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The test bundle, found by glob: its file name carries the pin, which only pin/versions.env may type.
bundles=(../shared/torchtitan/*.bundle)
BUNDLE="${TITANBENCH_TORCHTITAN_BUNDLE:-${bundles[0]}}"
# The bundle's one commit: the tree of the pin with generated c4_test data (its README.md).
BUNDLE_COMMIT=4527e4e6098a56a9d32a3d057574e5f5d91c413a
HOST_CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# Kept between runs: the canary CA, so cached layers are checked against the CA they were built with.
STATE="${TITANBENCH_CI_STATE:-/var/tmp/titanbench-ci}"
IMAGE="$(.venv/bin/titanbench docker --print-image --mode release)"

work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  [ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== image: %s (%ss)\n' "$*" "$SECONDS"; }
fail() { echo "image: FAIL: $*" >&2; exit 1; }

step "base image $BASE_TAG"
if ! $DOCKER image inspect "$BASE_TAG" >/dev/null 2>&1; then
  if $DOCKER image inspect "$TEST_BASE_TAG" >/dev/null 2>&1; then
    # setup-docker.sh's test base is the same debootstrap of bookworm (minbase, apt sources set).
    $DOCKER tag "$TEST_BASE_TAG" "$BASE_TAG"
  else
    debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR"
    tar -C "$work/rootfs" -c . | $DOCKER import - "$BASE_TAG"
    rm -rf "$work/rootfs"
  fi
fi

step "torchtitan served from $BUNDLE"
[ -f "$BUNDLE" ] || fail "$BUNDLE is missing (the torchtitan test bundle, see ../shared/torchtitan/README.md)"
git clone -q --bare "$BUNDLE" "$work/git/torchtitan.git"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
git daemon --reuseaddr --base-path="$work/git" --export-all --listen=127.0.0.1 --port="$port" "$work/git" &
daemon_pid=$!
repo="git://127.0.0.1:$port/torchtitan.git"
for _ in $(seq 30); do git ls-remote "$repo" >/dev/null 2>&1 && break; sleep 0.5; done
git ls-remote "$repo" | grep -q "^$BUNDLE_COMMIT" || fail "git daemon does not serve $BUNDLE_COMMIT at $repo"

# Canaries: none of these may reach any layer. The CA goes in with the host's bundle; the token
# and the proxy setting sit in the environment `make` and `docker build` run in.
mkdir -p "$STATE"
if [ ! -s "$STATE/canary-ca.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout /dev/null -days 3650 \
    -subj "/CN=titanbench CI canary CA" -out "$STATE/canary-ca.pem" 2>/dev/null
fi
cat "$HOST_CA_BUNDLE" "$STATE/canary-ca.pem" > "$work/extra-ca.crt"
HF_TOKEN="hf_ci_canary_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export HF_TOKEN
export no_proxy="${no_proxy:+$no_proxy,}titanbench-ci-canary.invalid"

step "make image-release -> $IMAGE"
build_start=$SECONDS
make image-release DOCKER="$DOCKER" \
  CUDA_DEVEL_IMAGE="$BASE_TAG" CUDA_RUNTIME_IMAGE="$BASE_TAG" \
  TORCHTITAN_REPO="$repo" TORCHTITAN_COMMIT="$BUNDLE_COMMIT" \
  EXTRA_CA_CERT="$work/extra-ca.crt" DOCKER_BUILD_FLAGS="--network host --progress plain"
echo "image: built in $((SECONDS - build_start)) s; $($DOCKER image inspect --format '{{.Size}}' "$IMAGE") bytes"
$DOCKER history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | cut -c 1-150

step "what the image is"
in_image() { $DOCKER run --rm --network none --entrypoint bash "$IMAGE" -c "$1"; }
[ "$($DOCKER history --format '{{.Size}}' "$IMAGE" | head -n 1)" = "0B" ] \
  || fail "the self-check's layer is not empty (bytecode or temporary files of the check shipped)"
$DOCKER image inspect --format '{{json .Config.Env}}' "$IMAGE" | grep -q DEBIAN_FRONTEND \
  && fail "DEBIAN_FRONTEND persists in the image's environment"
in_image 'command -v g++ && command -v lspci && g++ --version | head -n 1' || fail "g++ or lspci missing"
# shellcheck disable=SC2016 # expanded in the container
in_image 'test -z "$(git -C /opt/torchtitan remote)" && test ! -e /opt/torchtitan/.git/FETCH_HEAD' \
  || fail "/opt/torchtitan/.git still records where it was fetched from"

step "titanbench plan --model all --validate (in the image)"
$DOCKER run --rm --network none "$IMAGE" plan --model all --validate > "$work/plan.txt" \
  || { tail -n 30 "$work/plan.txt"; fail "plan --validate failed in the image"; }
tail -n 3 "$work/plan.txt"

step "titanbench doctor --no-gpu (in the image)"
status=0
$DOCKER run --rm --network none "$IMAGE" doctor --no-gpu > "$work/doctor.txt" 2>&1 || status=$?
cat "$work/doctor.txt"
grep -q Traceback "$work/doctor.txt" && fail "doctor printed a traceback"
# No tokenizer, no GPU here: FAILs are expected, and exit status 1 is doctor's "some check FAILed".
[ "$status" -eq 1 ] || fail "doctor exited $status, expected 1"
grep -q '^doctor: [0-9]* FAIL' "$work/doctor.txt" || fail "doctor printed no summary line"

# The CPU smoke matrix through the host launcher, as a user without GPUs runs it: no GPU request and
# no memlock limit (this dockerd may not raise it), results and caches in host directories. The
# container runs as root, as this script does, so it can write them. Fresh compile caches: inductor
# really compiles (g++ in the image), as on a user's first run.
image_smoke() {
  local run_id=ci-smoke status=0 start=$SECONDS port config
  local run_dir="$work/results/$run_id"
  # Host networking: torchrun's port and the driver's (the next one) must be free on this host.
  port="$(python3 -c '
import socket
while True:
    first, second = socket.socket(), socket.socket()
    first.bind(("", 0))
    try:
        second.bind(("", first.getsockname()[1] + 1))
    except OSError:
        continue
    print(first.getsockname()[1])
    break')"
  .venv/bin/titanbench docker --image "$IMAGE" --device cpu --model smoke \
    --results "$work/results" --cache "$work/cache" -- --run-id "$run_id" --master-port "$port" || status=$?
  echo "image: CPU smoke in $((SECONDS - start)) s, exit status $status"
  if [ "$status" -ne 0 ]; then
    for log in "$run_dir"/smoke/*/train.log; do
      [ ! -f "$log" ] || { echo "--- ${log#"$run_dir/"}"; tail -n 30 "$log"; }
    done
    fail "the CPU smoke failed in the image"
  fi
  # What the user finds on the host.
  [ -f "$run_dir/RESULTS.md" ] || fail "no RESULTS.md in the host's results directory ($run_dir)"
  grep -E '^\| (Vanilla|Async) TP \||^\| (vanilla|async)-' "$run_dir/RESULTS.md"
  for config in vanilla-bf16 async-bf16 vanilla-float8_tensorwise async-float8_tensorwise; do
    grep -Eq "^\| $config \| .* \| ok \|\$" "$run_dir/RESULTS.md" || fail "RESULTS.md does not show $config ok"
    python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("evidence_checked") is not True)' \
      "$run_dir/smoke/$config/result.json" || fail "$config: the async TP / float8 evidence was not checked"
  done
  for config in vanilla-float8_rowwise async-float8_rowwise; do
    grep -Eq "^\| $config \| .* \| skipped: not run on cpu: row-wise float8 has no CPU path" "$run_dir/RESULTS.md" \
      || fail "RESULTS.md does not show $config skipped with its reason"
  done
  [ -s "$run_dir/RESULTS.png" ] || fail "no RESULTS.png in $run_dir"
  # The token reached the container as a mounted file; nothing it wrote may hold it.
  status=0
  grep -rlF -e "$HF_TOKEN" -e hf_ci_canary "$work/results" "$work/cache" || status=$?
  [ "$status" -eq 1 ] || fail "the Hugging Face token is in the smoke's files listed above (or grep failed)"
}
step "CPU smoke (in the image)"
image_smoke

step "no CA, token or proxy setting in any layer"
# The canary CA's body, the extra CA's file name, the token, the proxy canary and the git URL.
{
  # A certificate's third base64 line lies inside its issuer name: one line per locally added CA.
  for cert in "$STATE/canary-ca.pem" /usr/local/share/ca-certificates/*.crt; do
    [ ! -f "$cert" ] || sed -n '3p' "$cert"
  done
  echo "$HF_TOKEN"
  echo "hf_ci_canary"
  echo "titanbench-ci-canary.invalid"
  echo "127.0.0.1:$port"
} | grep -v '^$' > "$work/patterns"
mkdir "$work/saved"
$DOCKER save "$IMAGE" | tar -x -C "$work/saved"
# Layers also must not hold the extra CA under its own name (the config's history may name the
# path, in the text of the RUN that removes it).
cp "$work/patterns" "$work/layer-patterns"
echo "titanbench-extra-ca" >> "$work/layer-patterns"
leaks=0
while IFS= read -r -d '' file; do
  patterns="$work/patterns"
  [ "${file##*/}" != layer.tar ] || patterns="$work/layer-patterns"
  if found="$(grep -a -o -F -f "$patterns" "$file" | sort -u)" && [ -n "$found" ]; then
    echo "image: leak in ${file#"$work/saved/"}: $(echo "$found" | cut -c 1-40 | tr '\n' ' ')" >&2
    leaks=1
  fi
done < <(find "$work/saved" -type f -print0)
[ "$leaks" -eq 0 ] || fail "secrets or build-only settings reached the image"
echo "image: $(find "$work/saved" -name layer.tar | wc -l) layers and the config checked: clean"

step "done"
