"""Every `TITANBENCH_*` environment variable: its name, its default, and how a path resolves.

One registry, so that the commands agree: `run` writes results and compile caches where `doctor`
checks the free disk, `docker` mounts what `run` reads. Click options name these constants in
`envvar=`; code that reads the environment directly goes through the functions below.
"""

import os
from collections.abc import Mapping
from pathlib import Path

MODEL = "TITANBENCH_MODEL"
DEVICE = "TITANBENCH_DEVICE"
TRAINER = "TITANBENCH_TRAINER"
TORCHTITAN_DIR = "TITANBENCH_TORCHTITAN_DIR"
RESULTS = "TITANBENCH_RESULTS"
CACHE_DIR = "TITANBENCH_CACHE_DIR"
TRACE_DIR = "TITANBENCH_TRACE_DIR"
DATASET_PATH = "TITANBENCH_DATASET_PATH"
WARMUP_STEPS = "TITANBENCH_WARMUP_STEPS"
PROFILE_FREQ = "TITANBENCH_PROFILE_FREQ"
EXPECT_GPUS = "TITANBENCH_EXPECT_GPUS"
HF_TOKEN_FILE = "TITANBENCH_HF_TOKEN_FILE"
IMAGE = "TITANBENCH_IMAGE"
JOIN_TIMEOUT = "TITANBENCH_JOIN_TIMEOUT"
LIVENESS_TIMEOUT = "TITANBENCH_LIVENESS_TIMEOUT"
# The CPU substitutions a smoke config needs, from the plan to titanbench.cpu_trainer.
CPU_SUBSTITUTIONS = "TITANBENCH_CPU_SUBSTITUTIONS"
# Set by the image itself (Dockerfile), read by doctor, env and the report.
BUILD_MODE = "TITANBENCH_BUILD_MODE"
TORCHTITAN_BUILT_COMMIT = "TITANBENCH_TORCHTITAN_BUILT_COMMIT"

DEFAULT_RESULTS = Path("results")
DEFAULT_TORCHTITAN_DIR = Path(".")
# Compile caches live under the results root unless --cache-dir / TITANBENCH_CACHE_DIR says otherwise.
CACHE_SUBDIR = "cache"


def results_root(env: Mapping[str, str] | None = None, given: Path | None = None) -> Path:
    """Where runs are written: `--results`, else $TITANBENCH_RESULTS, else ./results."""
    env = os.environ if env is None else env
    return (given or Path(env.get(RESULTS) or DEFAULT_RESULTS)).resolve()


def cache_root(results: Path, env: Mapping[str, str] | None = None, given: Path | None = None) -> Path:
    """Where compile caches go: `--cache-dir`, else $TITANBENCH_CACHE_DIR, else RESULTS/cache."""
    env = os.environ if env is None else env
    chosen = given or (Path(env[CACHE_DIR]) if env.get(CACHE_DIR) else None)
    return chosen.resolve() if chosen else results / CACHE_SUBDIR
