"""The environment manifest (`titanbench env --json`), recorded with every run.

Everything here must work on any machine: a section that cannot be read becomes null and its reason
goes under `unavailable`. Secrets never enter the manifest: variables pass through `redact_env`.
"""

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from titanbench import __version__, gpuinfo, settings
from titanbench.clock import utc_now
from titanbench.pins import pins
from titanbench.redact import is_secret_name, redact_env, redact_value

SCHEMA = "titanbench.env/1"
# Variables that change what a run computes or how it communicates, by prefix.
RELEVANT_PREFIXES = (
    "NCCL_",
    "TORCH_",
    "PYTORCH_",
    "TORCHINDUCTOR_",
    "TRITON_",
    "CUDA_",
    "NVIDIA_",
    "HF_",
    "HUGGINGFACE_",
    "TITANBENCH_",
    "OMP_",
    "UCX_",
    "FI_",
    "PET_",
    "MASTER_",
    "SLURM_",
    "WANDB_",
    "KUBERNETES_",
    "JOBSET_",
)
RELEVANT_NAMES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "JOB_COMPLETION_INDEX", "LD_LIBRARY_PATH")
SLURM_IDENTITY = (
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_CLUSTER_NAME",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NUM_NODES",
    "SLURM_JOB_NODELIST",
    "SLURM_NODEID",
    "SLURM_PROCID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
)
KUBERNETES_IDENTITY = (
    "JOBSET_NAME",
    "REPLICATED_JOB_NAME",
    "JOB_INDEX",
    "JOB_COMPLETION_INDEX",
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Written by the image build (when present): its OCI labels as a JSON object.
IMAGE_LABELS_FILE = Path("/etc/titanbench/image-labels.json")
# Set by the image; they identify it from inside.
IMAGE_VARS = (settings.IMAGE, settings.BUILD_MODE)
# Lower case by convention: systemd-nspawn, podman and enroot set `container=<runtime>`.
CONTAINER_VAR = "container"


def _relevant(name: str) -> bool:
    return name.startswith(RELEVANT_PREFIXES) or name in RELEVANT_NAMES or is_secret_name(name)


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    return redact_env({name: env[name] for name in sorted(env) if _relevant(name)})


def host() -> dict[str, Any]:
    memory = None
    with contextlib.suppress(ValueError, OSError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "memory_gib": memory,
    }


def _container_id() -> str | None:
    """Docker's container id, from the bind mounts it makes for /etc/hostname and friends."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    found = re.search(r"/(?:docker|containers)/containers/([0-9a-f]{64})/", mounts)
    return found[1] if found else None


def container() -> dict[str, Any] | None:
    runtime = None
    if Path("/.dockerenv").exists():
        runtime = "docker"
    elif Path("/run/.containerenv").exists():
        runtime = "podman"
    elif any(name.startswith("ENROOT_") for name in os.environ) or os.environ.get(CONTAINER_VAR):
        runtime = os.environ.get(CONTAINER_VAR) or "enroot"
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        runtime = "kubernetes"
    image = {name: os.environ[name] for name in IMAGE_VARS if name in os.environ}
    if runtime is None and not image:
        return None
    labels = None
    with contextlib.suppress(OSError, ValueError):
        labels = json.loads(IMAGE_LABELS_FILE.read_text())
    return {"runtime": runtime, "container_id": _container_id(), "image": image, "labels": labels}


def job() -> dict[str, Any] | None:
    identity: dict[str, Any] = {}
    slurm = {name: os.environ[name] for name in SLURM_IDENTITY if name in os.environ}
    if slurm:
        identity["slurm"] = slurm
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube: dict[str, Any] = {"pod": socket.gethostname()}
        kube.update({name: os.environ[name] for name in KUBERNETES_IDENTITY if name in os.environ})
        with contextlib.suppress(OSError):
            kube["namespace"] = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        identity["kubernetes"] = kube
    return identity or None


def packages() -> list[str]:
    """Installed distributions, one `pip freeze` line each; VCS installs as `name @ url@commit`."""
    lines = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        origin = direct_url(name, dist)
        vcs = origin.get("vcs_info") if origin else None
        if origin and vcs:
            lines.add(f"{name} @ {vcs.get('vcs', 'git')}+{redact_value(origin['url'])}@{vcs.get('commit_id')}")
        elif origin and origin.get("dir_info", {}).get("editable"):
            lines.add(f"-e {name} @ {redact_value(origin['url'])}")
        else:
            lines.add(f"{name}=={dist.version}")
    return sorted(lines, key=str.lower)


def direct_url(name: str, dist: importlib.metadata.Distribution | None = None) -> dict[str, Any] | None:
    """PEP 610 `direct_url.json` of an installed distribution (how pip got it), or None."""
    try:
        dist = dist or importlib.metadata.distribution(name)
        text = dist.read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_git_version() -> tuple[str | None, str | None]:
    """(torch.version.git_version, None) or (None, why not)."""
    try:
        import torch
    except Exception as error:  # a broken torch install is a finding, not a crash
        return None, f"torch does not import: {error}"
    return torch.version.git_version, None


def torchao_commit() -> str | None:
    """The torchao commit: pip's record of a git install, else a `+git<sha>` local version suffix."""
    origin = direct_url("torchao")
    if origin and origin.get("vcs_info", {}).get("commit_id"):
        return origin["vcs_info"]["commit_id"]
    found = re.search(r"\+git([0-9a-f]{7,40})", installed_version("torchao") or "")
    return found[1] if found else None


def _editable_checkout(name: str) -> str | None:
    """The directory of an editable install (`pip install -e DIR`), from its direct_url.json."""
    origin = direct_url(name) or {}
    url = str(origin.get("url", ""))
    return (
        url.removeprefix("file://")
        if origin.get("dir_info", {}).get("editable") and url.startswith("file://")
        else None
    )


def torchtitan_commit(checkout: str | None = None) -> tuple[str | None, str]:
    """(commit, where it came from): the checkout runs start in (`checkout`, else TITANBENCH_TORCHTITAN_DIR,
    else an editable install's directory), else pip's git record."""
    if checkout and not (Path(checkout) / "torchtitan" / "__init__.py").is_file():
        checkout = None  # a run's default `.` need not be torchtitan's tree
    checkout = checkout or os.environ.get(settings.TORCHTITAN_DIR) or _editable_checkout("torchtitan")
    if checkout:
        try:
            done = subprocess.run(
                ["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"git -C {checkout}: {error}"
        if done.returncode == 0:
            return done.stdout.strip(), f"git checkout {checkout}"
        return None, f"{checkout} is not a git checkout ({done.stderr.strip() or 'git failed'})"
    origin = direct_url("torchtitan")
    if origin and origin.get("vcs_info", {}).get("commit_id"):
        return origin["vcs_info"]["commit_id"], "pip direct_url.json"
    version = installed_version("torchtitan")
    if version is None:
        return None, "torchtitan is not installed"
    return None, f"torchtitan {version} installed from an index (no commit recorded; TITANBENCH_TORCHTITAN_DIR unset)"


def build_mode() -> str | None:
    """The image's build mode (source|release); None outside titanbench's image (never guessed)."""
    return os.environ.get(settings.BUILD_MODE) or None


def pin_report(torchtitan_dir: str | None = None) -> dict[str, Any]:
    """Each component's expected pin, what is installed, and whether they match (None: cannot tell).

    Outside the image (no build mode) the exact pins are what the stack is compared with."""
    p = pins()
    mode = build_mode()
    release = mode == "release"
    git_version, torch_reason = torch_git_version()
    expected_torch = p["RELEASE_TORCH_GIT_VERSION"] if release else p["TORCH_COMMIT"]
    ao_version = installed_version("torchao")
    ao_commit = torchao_commit()
    titan_commit, titan_source = torchtitan_commit(torchtitan_dir)
    if release:
        ao_expected = p["RELEASE_TORCHAO_VERSION"]
        ao_match = None if ao_version is None else ao_version.split("+")[0] == ao_expected
    else:
        ao_expected = p["TORCHAO_COMMIT"]
        ao_match = None if ao_commit is None else p["TORCHAO_COMMIT"].startswith(ao_commit)
    return {
        "mode": mode,
        "torch": {
            "expected_git_version": expected_torch,
            "git_version": git_version,
            "version": installed_version("torch"),
            "match": None if git_version is None else git_version == expected_torch,
            "note": torch_reason,
        },
        "torchao": {"expected": ao_expected, "version": ao_version, "commit": ao_commit, "match": ao_match},
        "torchtitan": {
            "expected_commit": p["TORCHTITAN_COMMIT"],
            "commit": titan_commit,
            "version": installed_version("torchtitan"),
            "source": titan_source,
            "match": None if titan_commit is None else titan_commit == p["TORCHTITAN_COMMIT"],
        },
    }


def nccl_version() -> tuple[str | None, str]:
    """(version, where from): the NCCL torch was built with, else the pip-installed NCCL."""
    try:
        import torch

        if torch.cuda.is_available() or torch.version.cuda:
            raw = torch.cuda.nccl.version()
            version = ".".join(map(str, raw)) if isinstance(raw, tuple) else str(raw)
            return version, "torch.cuda.nccl.version()"
    except Exception as error:  # a CPU-only or broken torch: fall through to the wheel's metadata
        reason = f"torch: {error}"
    else:
        reason = "torch is built without CUDA"
    for dist in ("nvidia-nccl-cu12", "nvidia-nccl-cu13", "nvidia-nccl-cu11"):
        wheel = installed_version(dist)
        if wheel:
            return wheel, f"pip package {dist}"
    return None, f"{reason}; no nvidia-nccl wheel installed"


def manifest(torchtitan_dir: str | None = None) -> dict[str, Any]:
    """The `titanbench env --json` object. Never raises on a machine without GPUs, RDMA or torch.

    `torchtitan_dir`: the checkout a run starts torchtitan in (its commit is the one recorded)."""
    unavailable: dict[str, str] = {}
    facts, gpu_reason = gpuinfo.gpu_facts()
    if gpu_reason:
        unavailable["gpu"] = gpu_reason
    ports, rdma_reason = gpuinfo.rdma_ports()
    if rdma_reason:
        unavailable["rdma"] = rdma_reason
    nccl, nccl_source = nccl_version()
    if nccl is None:
        unavailable["nccl"] = nccl_source
    inside = container()
    identity = job()
    return {
        "schema": SCHEMA,
        "titanbench": __version__,
        "created": utc_now(),
        "host": host(),
        "gpu": asdict(facts) if facts else None,
        "rdma": [asdict(port) for port in ports] or None,
        "nccl": {"version": nccl, "source": nccl_source} if nccl else None,
        "pins": pin_report(torchtitan_dir),
        "container": inside,
        "job": identity,
        "env": environment(),
        "packages": packages(),
        "unavailable": unavailable,
    }
