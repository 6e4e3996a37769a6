# titanbench: `make help` lists the targets. Every pin comes from pin/versions.env.
include pin/versions.env

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TITANBENCH := $(BIN)/titanbench
MODEL ?= all
RUN ?=

.DEFAULT_GOAL := help
.PHONY: help install services test test-fast lint plan report

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## Dev/CI virtualenv: CPU torch, torchtitan's config parser, titanbench[dev,host]
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "torch==$(CI_TORCH_VERSION)"
	$(BIN)/pip install "torchtitan==$(TORCHTITAN_VERSION)" "tyro==$(TYRO_VERSION)" tensorboard
	$(BIN)/pip install -e ".[dev,host]"

services: ## (root) Start what the marked tests need: a Docker engine and a one-node Slurm
	bash .ci/setup-docker.sh
	bash .ci/setup-slurm.sh

test: ## The test suite (CI runs exactly this)
	$(BIN)/pytest

test-fast: ## Unit tests only: no torchrun, Docker, Slurm, torchtitan parser or smoke (about a minute)
	$(BIN)/pytest -m "not torchrun and not docker and not slurm and not torchtitan and not smoke"

lint: lint-docker ## ruff, mypy and hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

plan: ## Show the launches of a matrix: make plan MODEL=70b
	$(TITANBENCH) plan --model $(MODEL)

report: ## Render a run directory: make report RUN=results/<run-id>
	@test -n "$(RUN)" || { echo "usage: make report RUN=results/<run-id>" >&2; exit 2; }
	$(TITANBENCH) report $(RUN) --out $(RUN)/RESULTS.md

# A fresh clone on a GPU host: `make image` / `make run` first make a venv with the host launcher only.
$(TITANBENCH):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[host]"

include mk/image.mk
include mk/deploy.mk
include mk/smoke.mk
image image-release run push enroot deploy: | $(TITANBENCH)
