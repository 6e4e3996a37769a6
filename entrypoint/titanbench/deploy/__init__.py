"""Cluster launch files: an sbatch script for Slurm + pyxis/enroot, Kubernetes manifests for Kubeflow
Trainer (TrainJob) and JobSet. Every node runs the same `titanbench run`, which finds its node rank and
node 0 in what the scheduler injects (see `titanbench.nodes`), so every node executes the same plan.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from titanbench.container import CACHE_TARGET, RESULTS_TARGET, TOKENIZER_TARGET, image_reference
from titanbench.errors import TitanbenchError
from titanbench.spec import MatrixSpec, load_spec

# Where the launch files mount shared storage in the container: the image's layout, as
# `titanbench docker` uses it, plus a folder for staged data sets (e.g. `--dataset-path /assets/c4`).
CONTAINER_RESULTS = RESULTS_TARGET
CONTAINER_CACHE = CACHE_TARGET
CONTAINER_COMPILE_CACHE = f"{CACHE_TARGET}/compile"
CONTAINER_HF_HOME = f"{CACHE_TARGET}/huggingface"
CONTAINER_TOKENIZER = TOKENIZER_TARGET
CONTAINER_ASSETS = "/assets"
# Compile caches (Inductor, Triton), per node by default: hundreds of ranks compiling into one
# directory on shared storage can stall step 1 past NCCL's init timeout. `shared` keeps them on the
# shared cache volume, so a later job starts warm. /tmp is the container's own, on the node's disk.
COMPILE_CACHES = ("local", "shared")
NODE_LOCAL_COMPILE_CACHE = "/tmp/titanbench-compile"


def compile_cache_dir(choice: str) -> str:
    """`titanbench run --cache-dir` inside the container for `--compile-cache`."""
    if choice not in COMPILE_CACHES:
        raise TitanbenchError(f"unknown compile cache {choice!r}: use one of {', '.join(COMPILE_CACHES)}")
    return NODE_LOCAL_COMPILE_CACHE if choice == "local" else CONTAINER_COMPILE_CACHE


@dataclass(frozen=True)
class Target:
    """One model on a number of nodes: what every launch file is rendered for."""

    spec: MatrixSpec
    model_ref: str
    nodes: int

    @property
    def gpus_per_node(self) -> int:
        return self.spec.topology.gpus_per_node

    def run_args(self, extra: tuple[str, ...] = ()) -> list[str]:
        """`titanbench run` arguments shared by every launcher (topology comes from the scheduler)."""
        return ["--model", self.model_ref, "--nodes", str(self.nodes), *extra]


def target(model: str, nodes: int | None) -> Target:
    """`--model` (id, alias or spec file) and `--nodes` [default: the published node count]."""
    if model == "all":
        raise TitanbenchError("deploy renders one model per launch file: pass --model llama3_8b or llama3_70b")
    spec = load_spec(model)
    path = Path(model)
    # A spec file must be found by every node: name it by its absolute path.
    ref = str(path.resolve()) if path.suffix in (".yaml", ".yml") or path.is_file() else spec.model
    return Target(spec=spec, model_ref=ref, nodes=nodes or spec.topology.nodes)


def dns_label(text: str) -> str:
    """`text` as a DNS-1035 label fragment (lower case, digits and '-')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_image() -> str:
    """The image built from the pins, as `titanbench docker` names it."""
    return image_reference()
