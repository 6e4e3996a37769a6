# The launch files committed under deploy/ (Slurm sbatch scripts, Kubernetes manifests), rendered by
# `titanbench deploy` itself; tests/test_deploy_examples.py checks that this changes nothing.

# The venv made by `make install` when included from the Makefile; any python with titanbench otherwise.
DEPLOY_PYTHON ?= $(if $(BIN),$(BIN)/python,python3)
DEPLOY_DIR ?= deploy

.PHONY: deploy

deploy:  ## Regenerate the example launch files under deploy/
	$(DEPLOY_PYTHON) -m titanbench.deploy.examples $(DEPLOY_DIR)
