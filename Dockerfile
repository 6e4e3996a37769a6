# The titanbench image: torch, torchao and torchtitan at the pins of the June 2025 async-TP benchmark.
# Build with `make image` (source mode, hours) or `make image-release` (public releases, minutes):
# every pin arrives as a --build-arg from pin/versions.env, so none has a default here.
# The last step runs `titanbench doctor --pins --no-gpu` inside the image: a build whose pins are
# off fails. See README.md, "The image".

ARG CUDA_DEVEL_IMAGE
ARG CUDA_RUNTIME_IMAGE
ARG BUILD_MODE

# ---- The runtime base (shipped) -------------------------------------------------------------------
FROM ${CUDA_RUNTIME_IMAGE} AS python-runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PYTHON_VERSION
# RDMA user-space libraries for NCCL's InfiniBand/RoCE transport; git for the commit self-check;
# gcc and the Python headers because Triton compiles its launcher stubs at run time; g++ for
# inductor's C++ backend (CPU kernels); pciutils for the lspci that torchtitan's peak-FLOPs lookup
# runs. The proxy CA (if any) is trusted only while apt runs, and is gone from the layer; so are
# the static libpython (nothing links against it here) and the apt lists. Man pages and message
# translations of these packages are never unpacked (copyright notices are kept).
# hadolint ignore=DL3008
RUN --mount=type=secret,id=extra-ca \
    : "${PYTHON_VERSION:?build arg missing: pass every key of pin/versions.env (make image)}" \
    && printf 'path-exclude=%s\n' '/usr/share/man/*' '/usr/share/locale/*/LC_MESSAGES/*.mo' \
         > /etc/dpkg/dpkg.cfg.d/titanbench-slim \
    && if [ -s /run/secrets/extra-ca ]; then \
         install -D -m 644 /run/secrets/extra-ca /usr/local/share/ca-certificates/titanbench-extra-ca.crt \
         && { ! command -v update-ca-certificates >/dev/null || update-ca-certificates; }; \
       fi \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates g++ gcc git \
         libc6-dev libibverbs1 ibverbs-providers pciutils \
         "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-dev" "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
         /usr/local/share/ca-certificates/titanbench-extra-ca.crt \
         /usr/lib/*/libpython"${PYTHON_VERSION}"*.a \
         /usr/lib/python"${PYTHON_VERSION}"/config-"${PYTHON_VERSION}"-*/libpython"${PYTHON_VERSION}"*.a \
    && update-ca-certificates --fresh >/dev/null \
    && git config --system --add safe.directory /opt/torchtitan

# ---- Fetch stages (never shipped): everything that needs no compiler, on the runtime base --------
# Release mode never pulls the devel base: its downloads, the torchtitan checkout, the titanbench
# wheel and the dependency check all run here. The proxy CA stays trusted in these stages.
FROM python-runtime AS fetch-base
ARG PYTHON_VERSION
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/build-venv/bin:$PATH
# A stalled git transfer fails instead of hanging the build (git:// and ssh: `timeout` on each fetch).
RUN --mount=type=secret,id=extra-ca \
    if [ -s /run/secrets/extra-ca ]; then \
      install -D -m 644 /run/secrets/extra-ca /usr/local/share/ca-certificates/titanbench-extra-ca.crt \
      && update-ca-certificates; \
    fi \
    && git config --system http.lowSpeedLimit 1000 \
    && git config --system http.lowSpeedTime 60 \
    && "python${PYTHON_VERSION}" -m venv /opt/build-venv

# torchtitan at TORCHTITAN_COMMIT, with .git: the self-check reads its commit at run time, and its
# train-config tomls and tests/assets/c4_test are used from this checkout. Fetched by URL, with no
# remote and no FETCH_HEAD left behind: a URL with credentials in it must not ship.
FROM fetch-base AS torchtitan-src
ARG TORCHTITAN_REPO
ARG TORCHTITAN_COMMIT
WORKDIR /opt/torchtitan
RUN : "${TORCHTITAN_REPO:?build arg missing}" "${TORCHTITAN_COMMIT:?build arg missing}" \
    && git init -q . \
    && timeout 900 git fetch -q --depth 1 "$TORCHTITAN_REPO" "$TORCHTITAN_COMMIT" \
    && git checkout -q FETCH_HEAD \
    && test "$(git rev-parse HEAD)" = "$TORCHTITAN_COMMIT" \
    && rm -f .git/FETCH_HEAD \
    && ! grep -rqF "$TORCHTITAN_REPO" .git

FROM fetch-base AS titanbench-wheel
COPY pyproject.toml README.md /src/titanbench/
COPY entrypoint /src/titanbench/entrypoint
COPY runs /src/titanbench/runs
COPY pin /src/titanbench/pin
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src/titanbench

# Fail early: the lock, the torchtitan checkout and the titanbench wheel, each installed without its
# dependencies, must pass `pip check` (torch aside, which comes later): the lock must hold every
# requirement, before any torch is built or downloaded. The
# torch stages mount /deps-ok from here, so BuildKit cannot start them before this passes.
FROM fetch-base AS deps-check
ARG PYTHON_VERSION
COPY pin/requirements-torchtitan.txt /tmp/requirements-torchtitan.txt
RUN --mount=type=bind,from=torchtitan-src,source=/opt/torchtitan,target=/opt/torchtitan,rw \
    --mount=type=bind,from=titanbench-wheel,source=/wheels,target=/titanbench-wheels \
    --mount=type=cache,target=/root/.cache/pip \
    "python${PYTHON_VERSION}" -m venv /tmp/check-venv \
    && /tmp/check-venv/bin/pip install -q --no-deps --require-hashes -r /tmp/requirements-torchtitan.txt \
    && /tmp/check-venv/bin/pip install -q --no-deps --no-build-isolation /opt/torchtitan \
    && /tmp/check-venv/bin/pip install -q --no-deps /titanbench-wheels/titanbench-*.whl \
    && { /tmp/check-venv/bin/pip check > /tmp/pip-check.txt || true; } \
    && if grep -Ev '^No broken requirements found\.$|^[^ ]+ [^ ]+ requires torch, which is not installed\.$' \
         /tmp/pip-check.txt; then \
         echo "pip check: the lock (pin/requirements-torchtitan.txt) misses the requirements above" >&2; exit 1; \
       fi \
    && rm -rf /tmp/check-venv \
    && touch /deps-ok

# ---- Source-mode build stages (never shipped): the compiler toolchain on the CUDA devel base ------
FROM ${CUDA_DEVEL_IMAGE} AS build-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PYTHON_VERSION
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/build-venv/bin:$PATH
# The optional proxy CA (BuildKit secret `extra-ca`) is trusted for the rest of the build stages
# (by the base image's ca-certificates, or by the package's own postinst when it comes with apt).
# Ubuntu's versions of these packages follow the base image, which is pinned.
# hadolint ignore=DL3008
RUN --mount=type=secret,id=extra-ca \
    : "${PYTHON_VERSION:?build arg missing: pass every key of pin/versions.env (make image)}" \
    && if [ -s /run/secrets/extra-ca ]; then \
         install -D -m 644 /run/secrets/extra-ca /usr/local/share/ca-certificates/titanbench-extra-ca.crt \
         && { ! command -v update-ca-certificates >/dev/null || update-ca-certificates; }; \
       fi \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential ca-certificates git \
         "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-dev" "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system http.lowSpeedLimit 1000 \
    && git config --system http.lowSpeedTime 60 \
    && "python${PYTHON_VERSION}" -m venv /opt/build-venv

# torch at TORCH_COMMIT, with its .git: the wheel's torch.version.git_version is the pin.
FROM build-base AS torch-build
ARG TORCH_REPO
ARG TORCH_COMMIT
ARG MAX_JOBS
WORKDIR /src/pytorch
RUN --mount=type=bind,from=deps-check,source=/deps-ok,target=/deps-ok \
    : "${TORCH_REPO:?build arg missing}" "${TORCH_COMMIT:?build arg missing}" \
    && git init -q . \
    && git remote add origin "$TORCH_REPO" \
    && timeout 3600 git fetch -q --depth 1 origin "$TORCH_COMMIT" \
    && git checkout -q FETCH_HEAD \
    && test "$(git rev-parse HEAD)" = "$TORCH_COMMIT" \
    && timeout 3600 git submodule update -q --init --recursive --jobs 8
# Build tools of the pinned checkout's own requirements.txt; nothing of them ships.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r requirements.txt "cmake>=3.27,<4" ninja setuptools wheel
# NCCL is not a submodule at this commit: the build clones and links it (USE_SYSTEM_NCCL=0).
RUN : "${MAX_JOBS:?build arg missing}" \
    && USE_CUDA=1 USE_DISTRIBUTED=1 USE_NCCL=1 BUILD_TEST=0 TORCH_CUDA_ARCH_LIST="9.0" \
       MAX_JOBS="$MAX_JOBS" python setup.py bdist_wheel --dist-dir /wheels
# Triton at the commit this torch pins (.ci/docker/ci_commit_pins/triton.txt): the pytorch-triton
# wheel of that commit from PyTorch's index, else built from source with torch's own script.
WORKDIR /wheels
RUN triton_version="$(cat /src/pytorch/.ci/docker/triton_version.txt)" \
    && triton_commit="$(head -c 8 /src/pytorch/.ci/docker/ci_commit_pins/triton.txt)" \
    && { pip download --no-deps --dest /wheels --index-url https://download.pytorch.org/whl/nightly/ \
           "pytorch-triton==${triton_version}+git${triton_commit}" \
         || MAX_JOBS="$MAX_JOBS" python /src/pytorch/.github/scripts/build_triton_wheel.py; } \
    && ls /wheels/pytorch_triton-*.whl

# torchao at TORCHAO_COMMIT. Its setup.py imports torch (hence --no-build-isolation) and appends
# `+git<short sha>` to the version, which the self-check compares with the pin.
FROM build-base AS torchao-build
ARG TORCHAO_REPO
ARG TORCHAO_COMMIT
WORKDIR /src/ao
# setuptools and wheel only build torchao's pure-Python wheel here; nothing of them ships.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=torch-build,source=/wheels,target=/torch-wheels \
    --mount=type=cache,target=/root/.cache/pip \
    : "${TORCHAO_REPO:?build arg missing}" "${TORCHAO_COMMIT:?build arg missing}" \
    && git init -q . \
    && git remote add origin "$TORCHAO_REPO" \
    && timeout 900 git fetch -q --depth 1 origin "$TORCHAO_COMMIT" \
    && git checkout -q FETCH_HEAD \
    && test "$(git rev-parse HEAD)" = "$TORCHAO_COMMIT" \
    && pip install /torch-wheels/torch-*.whl setuptools wheel \
    && USE_CPP=0 pip wheel --no-build-isolation --no-deps --wheel-dir /wheels .

FROM scratch AS wheels-source
COPY --from=torch-build /wheels/torch-*.whl /wheels/pytorch_triton-*.whl /wheels/
COPY --from=torchao-build /wheels/ /wheels/

# Release mode: the nearest public releases (approximate pins); torch from PyPI bundles CUDA 12.8.
# Downloaded only after the dependency check passed.
FROM fetch-base AS wheels-release
ARG RELEASE_TORCH_VERSION
ARG RELEASE_TORCHAO_VERSION
RUN --mount=type=bind,from=deps-check,source=/deps-ok,target=/deps-ok \
    : "${RELEASE_TORCH_VERSION:?build arg missing}" "${RELEASE_TORCHAO_VERSION:?build arg missing}" \
    && pip download --no-cache-dir --no-deps --dest /wheels \
         "torch==${RELEASE_TORCH_VERSION}" "torchao==${RELEASE_TORCHAO_VERSION}"

# BUILD_MODE (source|release) picks which wheels the image installs (a stage of this file, no tag).
# hadolint ignore=DL3006
FROM wheels-${BUILD_MODE} AS wheels

# ---- Runtime --------------------------------------------------------------------------------------
FROM python-runtime AS runtime-source
ARG TORCH_COMMIT
ARG TORCHAO_COMMIT
ENV PYTORCH_VERSION=git${TORCH_COMMIT}
LABEL io.titanbench.torch.commit=${TORCH_COMMIT} \
      io.titanbench.torchao.commit=${TORCHAO_COMMIT}

FROM python-runtime AS runtime-release
ARG RELEASE_TORCH_VERSION
ARG RELEASE_TORCHAO_VERSION
ENV PYTORCH_VERSION=${RELEASE_TORCH_VERSION}
LABEL io.titanbench.torch.version=${RELEASE_TORCH_VERSION} \
      io.titanbench.torchao.version=${RELEASE_TORCHAO_VERSION}

# The runtime of the chosen mode (a stage of this file, no tag). The virtualenv is built in place,
# in two layers: torch and the lock (large, rebuilt only when they change), then torchtitan and
# titanbench (small, rebuilt on every titanbench change).
# hadolint ignore=DL3006
FROM runtime-${BUILD_MODE} AS runtime
ARG PYTHON_VERSION
ARG BUILD_MODE
ARG TORCHTITAN_COMMIT
ARG CUDA_RUNTIME_IMAGE
# torch's own dependencies resolve as `pip install torch` would; everything else is hash-locked.
# The proxy CA (if any) is trusted only for this step and removed in it.
RUN --mount=type=secret,id=extra-ca \
    --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=bind,source=pin/requirements-torchtitan.txt,target=/tmp/requirements-torchtitan.txt \
    if [ -s /run/secrets/extra-ca ]; then \
      install -D -m 644 /run/secrets/extra-ca /usr/local/share/ca-certificates/titanbench-extra-ca.crt \
      && update-ca-certificates >/dev/null; \
    fi \
    && export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    && "python${PYTHON_VERSION}" -m venv /opt/venv \
    && /opt/venv/bin/pip install -q /wheels/*.whl \
    && /opt/venv/bin/pip install -q --require-hashes -r /tmp/requirements-torchtitan.txt \
    && rm -f /usr/local/share/ca-certificates/titanbench-extra-ca.crt \
    && update-ca-certificates --fresh >/dev/null
COPY --from=torchtitan-src /opt/torchtitan /opt/torchtitan
RUN --mount=type=bind,from=titanbench-wheel,source=/wheels,target=/titanbench-wheels \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    && /opt/venv/bin/pip install -q --no-deps --no-build-isolation --editable /opt/torchtitan \
    && /opt/venv/bin/pip install -q --no-deps /titanbench-wheels/titanbench-*.whl \
    && /opt/venv/bin/pip check
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    TITANBENCH_TORCHTITAN_DIR=/opt/torchtitan \
    TITANBENCH_TORCHTITAN_BUILT_COMMIT=${TORCHTITAN_COMMIT} \
    TITANBENCH_BUILD_MODE=${BUILD_MODE}
LABEL org.opencontainers.image.title="titanbench" \
      org.opencontainers.image.description="torchtitan June 2025 async-TP benchmark, pinned" \
      org.opencontainers.image.base.name=${CUDA_RUNTIME_IMAGE} \
      io.titanbench.build-mode=${BUILD_MODE} \
      io.titanbench.torchtitan.commit=${TORCHTITAN_COMMIT}
WORKDIR /opt/torchtitan
ENTRYPOINT ["titanbench"]
CMD ["--help"]
# The self-check: torch, torchao and torchtitan are the pinned ones and all 12 configs parse. It
# writes no bytecode and keeps its temporary and inductor files in a directory it removes, so its
# layer is empty.
RUN export PYTHONDONTWRITEBYTECODE=1 TMPDIR=/tmp/self-check TORCHINDUCTOR_CACHE_DIR=/tmp/self-check/inductor \
    && mkdir -p "$TMPDIR" \
    && titanbench doctor --pins --no-gpu \
    && rm -rf "$TMPDIR"
