"""The sbatch script: one task per node, all GPUs of each node, `titanbench run` on every node.

Container mode runs the image through pyxis/enroot (`srun --container-image`); `--no-container` runs
a virtualenv on shared storage. The `#SBATCH` header is one unbroken block right after the shebang:
sbatch stops reading directives at the first line that is not a comment.
"""

import shlex
from dataclasses import dataclass

from titanbench.deploy import (
    CONTAINER_ASSETS,
    CONTAINER_CACHE,
    CONTAINER_HF_HOME,
    CONTAINER_RESULTS,
    CONTAINER_TOKENIZER,
    Target,
    compile_cache_dir,
)
from titanbench.plan import DEFAULT_MASTER_PORT
from titanbench.staging import TOKENIZER_FILE


@dataclass(frozen=True)
class SlurmOptions:
    image: str | None = None
    """Container image (pyxis reference such as `registry#repo:tag`, or a .sqsh path); None: no container."""
    venv: str | None = None
    """The virtualenv of --no-container runs; None: SUBMIT_DIR/.venv."""
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    master_port: int = DEFAULT_MASTER_PORT
    extra: tuple[str, ...] = ()
    command_line: str = ""
    compile_cache: str = "local"
    """`local`: each node compiles into its own /tmp; `shared`: into the shared cache directory."""


def sbatch_directives(target: Target, options: SlurmOptions) -> list[str]:
    job_name = f"titanbench-{target.spec.model}"
    directives = [
        f"--job-name={job_name}",
        f"--nodes={target.nodes}",
        "--ntasks-per-node=1",
        f"--gpus-per-node={target.gpus_per_node}",
        "--exclusive",
        "--output=%x-%j.out",
    ]
    for name in ("partition", "account", "time"):
        value = getattr(options, name)
        if value:
            directives.append(f"--{name}={value}")
    return [f"#SBATCH {d}" for d in directives]


_NETWORK_KNOBS = """\
# Network: NCCL detects InfiniBand/RoCE and NVLink itself; set only what your fabric needs (srun passes
# the environment to every task, into the container too). Never NCCL_IB_DISABLE=1: it also turns off
# RoCE and silently falls back to TCP sockets. Cloud NCCL plugins (e.g. EFA) come with their own settings.
# export NCCL_DEBUG=INFO                 # log the transport NCCL picked (look for NET/IB, not NET/Socket)
# export NCCL_SOCKET_IFNAME=eth0         # interface for NCCL's bootstrap and TCP traffic
# export NCCL_IB_HCA=mlx5_0,mlx5_1       # restrict NCCL to these RDMA devices (`ibv_devinfo -l`)
# export NCCL_IB_GID_INDEX=3             # RoCE v2: the GID index your fabric routes
# export NCCL_NET_GDR_LEVEL=PHB          # how far GPUDirect RDMA may reach (nvidia-peermem or DMA-BUF)
# Data: the published runs stream C4 from the Hugging Face hub on every rank. With a staged copy
# (`titanbench assets c4`) pass `-- --dataset-path DIR` to `titanbench deploy`, and:
# export HF_HUB_OFFLINE=1
"""


_CACHE_NOTE = """\
# Caches: the Hugging Face cache is named here, on the shared cache directory (a container started
# with --no-container-mount-home has no $HOME to put it in). Compile caches (Inductor, Triton) go where
# `titanbench run --cache-dir` says below: per node under /tmp by default, since hundreds of ranks
# compiling into one shared directory can stall step 1 (`titanbench deploy slurm --compile-cache`).
"""


def _run_lines(target: Target, options: SlurmOptions, results: str, cache: str) -> list[str]:
    """`titanbench run` for every node: the topology from Slurm, node 0 and its port pinned here."""
    model = " ".join(shlex.quote(word) for word in target.run_args())
    extra = " ".join(shlex.quote(word) for word in options.extra)
    return [
        f"    titanbench run {model} \\",
        '    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \\',
        f"    --results {results} --cache-dir {cache}" + (f" {extra}" if extra else ""),
    ]


def render_sbatch(target: Target, options: SlurmOptions) -> str:
    model = target.spec
    hf_home = CONTAINER_HF_HOME if options.image else '"$CACHE_DIR/huggingface"'
    lines = ["#!/bin/bash", *sbatch_directives(target, options)]
    lines += [
        f"# {model.title}: {target.nodes} node(s) x {target.gpus_per_node} GPUs, one `titanbench run` per node;",
        "# each finds its node rank in SLURM_NODEID. Submit from shared storage: sbatch <this file>",
    ]
    if options.command_line:
        lines.append(f"# Rendered by: {options.command_line}")
    lines += [
        "# The Hugging Face token travels in the environment (export HF_TOKEN before sbatch), never in this file.",
        "set -euo pipefail",
        "",
        "# Shared storage seen by every node; export these before sbatch to move them.",
        'RESULTS_DIR="${TITANBENCH_HOST_RESULTS:-$SLURM_SUBMIT_DIR/results}"',
        'CACHE_DIR="${TITANBENCH_HOST_CACHE:-$RESULTS_DIR/cache}"',
    ]
    if options.image:
        lines.append('ASSETS_DIR="${TITANBENCH_HOST_ASSETS:-$SLURM_SUBMIT_DIR/assets}"')
        lines.append(f'IMAGE="${{TITANBENCH_IMAGE:-{options.image}}}"')
    else:
        lines.append(f'VENV="${{TITANBENCH_VENV:-{options.venv or "$SLURM_SUBMIT_DIR/.venv"}}}"')
    lines += [
        "",
        "# torchrun's static rendezvous: global rank 0 on the allocation's first host, at a pinned port",
        "# (enroot's PyTorch hook would otherwise pick an ephemeral one). titanbench also uses port + 1.",
        'mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        'MASTER_ADDR="${hosts[0]}"',
        f"MASTER_PORT={options.master_port}",
        "export MASTER_ADDR MASTER_PORT",
        "",
        *_NETWORK_KNOBS.splitlines(),
        "",
        'mkdir -p "$RESULTS_DIR" "$CACHE_DIR"',
        "",
        *_CACHE_NOTE.splitlines(),
        f"export HF_HOME={hf_home}",
        "",
    ]
    if options.image:
        lines += _container_steps(target, options)
    else:
        # The node-local directory is named in this script, so every node gets the same path.
        compile_cache = '"/tmp/titanbench-$SLURM_JOB_ID"' if options.compile_cache == "local" else '"$CACHE_DIR"'
        lines += [
            "# The virtualenv must sit at the same path on every node (shared storage); torchrun comes from it.",
            'export PATH="$VENV/bin:$PATH"',
            "srun --ntasks-per-node=1 --kill-on-bad-exit=1 \\",
            *_run_lines(target, options, '"$RESULTS_DIR"', compile_cache),
        ]
    return "\n".join(lines) + "\n"


def _container_steps(target: Target, options: SlurmOptions) -> list[str]:
    mounts = ",".join(
        [
            f"$RESULTS_DIR:{CONTAINER_RESULTS}",
            f"$CACHE_DIR:{CONTAINER_CACHE}",
            f"$ASSETS_DIR:{CONTAINER_ASSETS}",
            f"$ASSETS_DIR/tokenizer:{CONTAINER_TOKENIZER}",
        ]
    )
    return [
        f'if [[ ! -s "$ASSETS_DIR/tokenizer/{TOKENIZER_FILE}" ]]; then',
        '    echo "no tokenizer in $ASSETS_DIR/tokenizer; stage it once:" \\',
        '        "titanbench assets tokenizer --dest $ASSETS_DIR/tokenizer" >&2',
        "    exit 1",
        "fi",
        "",
        "# One container per node, shared by the 8 local ranks (async TP needs one /tmp and PID namespace).",
        "container=(",
        '    --container-image="$IMAGE"',
        '    --container-name="titanbench-$SLURM_JOB_ID"',
        f'    --container-mounts="{mounts}"',
        "    --no-container-mount-home",
        ")",
        "",
        "# Pre-pull: every node imports the image before the run, so no node starts late.",
        'srun --ntasks-per-node=1 "${container[@]}" true',
        "",
        'srun --ntasks-per-node=1 --kill-on-bad-exit=1 "${container[@]}" \\',
        *_run_lines(target, options, CONTAINER_RESULTS, compile_cache_dir(options.compile_cache)),
    ]
