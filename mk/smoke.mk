# The smoke matrix (runs/smoke.yaml): torchtitan's own trainer on its debug model, through titanbench.
# It needs the benchmark era's stack (torch 2.13 breaks compile + TP with the pinned torchtitan), so it
# has a venv of its own, built as the image's venv is: the release torch and torchao wheels, the image's
# hash lock, the torchtitan checkout (--no-deps, editable) and titanbench (--no-deps), then `pip check`.

SMOKE_VENV ?= .venv-smoke
# The torchtitan checkout the smoke runs in; cloned at the pin when absent.
TORCHTITAN_DIR ?= $(or $(TITANBENCH_TORCHTITAN_DIR),.cache/torchtitan)
DEVICE ?= auto
SMOKE_ARGS ?=

.PHONY: smoke smoke-env

$(TORCHTITAN_DIR)/torchtitan/train.py:
	git init -q $(TORCHTITAN_DIR)
	git -C $(TORCHTITAN_DIR) fetch -q --depth 1 $(TORCHTITAN_REPO) $(TORCHTITAN_COMMIT)
	git -C $(TORCHTITAN_DIR) checkout -q FETCH_HEAD

$(SMOKE_VENV)/bin/titanbench: pin/requirements-torchtitan.txt pin/versions.env | $(TORCHTITAN_DIR)/torchtitan/train.py
	rm -rf $(SMOKE_VENV)
	$(PYTHON) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/pip install --upgrade pip
	$(SMOKE_VENV)/bin/pip install "torch==$(RELEASE_TORCH_VERSION)" "torchao==$(RELEASE_TORCHAO_VERSION)"
	$(SMOKE_VENV)/bin/pip install --require-hashes -r pin/requirements-torchtitan.txt
	$(SMOKE_VENV)/bin/pip install --no-deps --no-build-isolation --editable $(TORCHTITAN_DIR)
	$(SMOKE_VENV)/bin/pip install --no-deps --editable .
	$(SMOKE_VENV)/bin/pip check

smoke-env: $(SMOKE_VENV)/bin/titanbench ## The smoke's venv: torch/torchao releases of the era, the image's lock (~7 GB)

smoke: smoke-env ## The smoke matrix on this machine: make smoke [DEVICE=cpu|cuda] [SMOKE_ARGS=...]
	$(SMOKE_VENV)/bin/titanbench run --model smoke --device $(DEVICE) --torchtitan-dir $(TORCHTITAN_DIR) $(SMOKE_ARGS)
