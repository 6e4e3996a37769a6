"""Kubernetes manifests: one pod per node, all its GPUs, `titanbench run` as the command.

Two flavors:
- `trainjob`: a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1) on the default
  `torch-distributed` ClusterTrainingRuntime. The controller injects PET_NNODES, PET_NODE_RANK,
  PET_MASTER_ADDR and PET_MASTER_PORT; the pod settings the TrainJob's `trainer` cannot express
  (/dev/shm, IPC_LOCK, volumes) go through `runtimePatches`.
- `jobset`: a plain JobSet (jobset.x-k8s.io/v1alpha2) with one Indexed Job of N pods: the node rank is
  the completion index, node 0 is the stable pod name `<jobset>-<job>-0-0.<subdomain>`.
"""

from dataclasses import dataclass
from typing import Any

import yaml

from titanbench.deploy import (
    CONTAINER_CACHE,
    CONTAINER_COMPILE_CACHE,
    CONTAINER_RESULTS,
    CONTAINER_TOKENIZER,
    Target,
    dns_label,
)
from titanbench.errors import TitanbenchError
from titanbench.plan import DEFAULT_MASTER_PORT

FLAVORS = ("trainjob", "jobset")
TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
JOBSET_API = "jobset.x-k8s.io/v1alpha2"
# The runtime Kubeflow Trainer installs by default, and the names of its replicated job and container
# (manifests/base/runtimes/torch_distributed.yaml upstream); runtimePatches address them by name.
TORCH_RUNTIME = "torch-distributed"
RUNTIME_JOB = "node"
RUNTIME_CONTAINER = "node"
PATCH_MANAGER = "titanbench"
JOBSET_JOB = "node"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
DEFAULT_RESULTS_PVC = "titanbench"
DEFAULT_HF_SECRET = "hf-token"
HF_SECRET_KEY = "token"
# A pod's hostname `<jobset>-<job>-<jobIndex>-<podIndex>` must be a DNS label (63 characters).
MAX_HOSTNAME = 63


@dataclass(frozen=True)
class K8sOptions:
    image: str
    flavor: str = "trainjob"
    namespace: str | None = None
    rdma_resource: str | None = None
    """Extended resource name of the RDMA device plugin, optionally `NAME=COUNT` (count 1 by default)."""
    results_pvc: str = DEFAULT_RESULTS_PVC
    hf_secret: str = DEFAULT_HF_SECRET
    master_port: int = DEFAULT_MASTER_PORT
    extra: tuple[str, ...] = ()


def job_name(target: Target) -> str:
    """The TrainJob or JobSet name; its last pod's host name `<name>-<job>-0-<N-1>` must fit a DNS label."""
    name = f"titanbench-{dns_label(target.spec.model)}"
    hostname = f"{name}-{JOBSET_JOB}-0-{target.nodes - 1}"
    if len(hostname) > MAX_HOSTNAME:
        raise TitanbenchError(f"pod host name {hostname!r} is longer than {MAX_HOSTNAME} characters")
    return name


def _resources(target: Target, options: K8sOptions) -> dict[str, Any]:
    amounts: dict[str, Any] = {"nvidia.com/gpu": target.gpus_per_node}
    if options.rdma_resource:
        name, _, count = options.rdma_resource.partition("=")
        if not name or "/" not in name or (count and not count.isdigit()):
            raise TitanbenchError(
                f"--rdma-resource {options.rdma_resource!r}: expected an extended resource name such as "
                "rdma/hca_shared_devices_a, optionally =COUNT"
            )
        amounts[name] = int(count or 1)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _hf_token_env(options: K8sOptions) -> dict[str, Any]:
    # Optional: a pre-staged tokenizer needs no token, and C4 is public.
    ref = {"name": options.hf_secret, "key": HF_SECRET_KEY, "optional": True}
    return {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}


def _volumes(options: K8sOptions) -> list[dict[str, Any]]:
    return [
        # NCCL and the 8 local ranks share memory through /dev/shm; the container default is 64 MiB.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": options.results_pvc}},
    ]


def _volume_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "data", "mountPath": CONTAINER_RESULTS, "subPath": "results"},
        {"name": "data", "mountPath": CONTAINER_CACHE, "subPath": "cache"},
        {"name": "data", "mountPath": CONTAINER_TOKENIZER, "subPath": "assets/tokenizer"},
    ]


# Pinned memory registration for RDMA (ulimit -l) needs IPC_LOCK.
_SECURITY_CONTEXT = {"capabilities": {"add": ["IPC_LOCK"]}}


def _run_command(target: Target, options: K8sOptions) -> list[str]:
    return [
        "titanbench",
        "run",
        *target.run_args(),
        "--results",
        CONTAINER_RESULTS,
        "--cache-dir",
        CONTAINER_COMPILE_CACHE,
        *options.extra,
    ]


def _metadata(name: str, target: Target, options: K8sOptions) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if options.namespace:
        metadata["namespace"] = options.namespace
    metadata["labels"] = {"app.kubernetes.io/name": "titanbench", "titanbench/model": dns_label(target.spec.model)}
    return metadata


def trainjob(target: Target, options: K8sOptions) -> dict[str, Any]:
    pod_patch = {
        "containers": [
            {
                "name": RUNTIME_CONTAINER,
                "securityContext": _SECURITY_CONTEXT,
                "volumeMounts": _volume_mounts(),
            }
        ],
        "volumes": _volumes(options),
    }
    job_patch = {"name": RUNTIME_JOB, "template": {"spec": {"template": {"spec": pod_patch}}}}
    return {
        "apiVersion": TRAINJOB_API,
        "kind": "TrainJob",
        "metadata": _metadata(job_name(target), target, options),
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": TORCH_RUNTIME},
            "trainer": {
                "image": options.image,
                "command": _run_command(target, options),
                "numNodes": target.nodes,
                "numProcPerNode": target.gpus_per_node,
                "resourcesPerNode": _resources(target, options),
                "env": [_hf_token_env(options)],
            },
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job_patch]}}},
                }
            ],
        },
    }


def jobset_master(name: str) -> str:
    """Node 0's stable DNS name: pod 0 of job 0 of the replicated job, in the JobSet's subdomain."""
    return f"{name}-{JOBSET_JOB}-0-0.{name}"


def jobset(target: Target, options: K8sOptions) -> dict[str, Any]:
    name = job_name(target)
    container = {
        "name": "titanbench",
        "image": options.image,
        "command": _run_command(target, options),
        "env": [
            {"name": "MASTER_ADDR", "value": jobset_master(name)},
            {"name": "MASTER_PORT", "value": str(options.master_port)},
            # Kubernetes injects it for Indexed Jobs too; stated here so the rank source is explicit.
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}},
            },
            _hf_token_env(options),
        ],
        "resources": _resources(target, options),
        "securityContext": _SECURITY_CONTEXT,
        "volumeMounts": _volume_mounts(),
    }
    job = {
        "parallelism": target.nodes,
        "completions": target.nodes,
        "completionMode": "Indexed",
        # One node failing fails the run: torchrun's static rendezvous cannot take a replacement.
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [container], "volumes": _volumes(options)}},
    }
    return {
        "apiVersion": JOBSET_API,
        "kind": "JobSet",
        "metadata": _metadata(name, target, options),
        "spec": {
            "network": {"enableDNSHostnames": True, "subdomain": name},
            "failurePolicy": {"maxRestarts": 0},
            "replicatedJobs": [{"name": JOBSET_JOB, "replicas": 1, "template": {"spec": job}}],
        },
    }


def manifest(target: Target, options: K8sOptions) -> dict[str, Any]:
    if options.flavor not in FLAVORS:
        raise TitanbenchError(f"unknown flavor {options.flavor!r}: use one of {', '.join(FLAVORS)}")
    return trainjob(target, options) if options.flavor == "trainjob" else jobset(target, options)


def render_manifest(target: Target, options: K8sOptions, command_line: str = "") -> str:
    header = f"# Rendered by: {command_line}\n" if command_line else ""
    return header + yaml.safe_dump(manifest(target, options), sort_keys=False, width=120)
