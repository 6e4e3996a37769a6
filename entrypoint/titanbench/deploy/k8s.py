"""Kubernetes manifests: one pod per node, all its GPUs, `titanbench run` as the command.

Two flavors:
- `trainjob`: a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1) on the default
  `torch-distributed` ClusterTrainingRuntime. The controller injects PET_NNODES, PET_NODE_RANK,
  PET_MASTER_ADDR and PET_MASTER_PORT; the pod settings the TrainJob's `trainer` cannot express
  (/dev/shm, IPC_LOCK, volumes, scheduling, network annotations) go through `runtimePatches`, a field
  that only newer Trainer releases have (`TRAINER_REQUIREMENT`).
- `jobset`: a plain JobSet (jobset.x-k8s.io/v1alpha2) with one Indexed Job of N pods: the node rank is
  the completion index, node 0 is the stable pod name `<jobset>-<job>-0-0.<subdomain>`.
"""

import re
from dataclasses import dataclass
from typing import Any

import yaml

from titanbench.deploy import (
    CONTAINER_CACHE,
    CONTAINER_HF_HOME,
    CONTAINER_RESULTS,
    CONTAINER_TOKENIZER,
    Target,
    compile_cache_dir,
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
GPU_RESOURCE = "nvidia.com/gpu"
# Multus reads a pod's secondary networks from this annotation (e.g. a RoCE SR-IOV or macvlan network).
MULTUS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
# What the TrainJob flavor needs of the cluster, said in the rendered file and the docs. No release
# number: the field came with kubeflow/trainer PR 3309 (merged March 2026), and the tests validate
# against a CRD that has it (tests/data/schemas/README.md names its commit).
TRAINER_REQUIREMENT = (
    "Needs a Kubeflow Trainer whose TrainJob CRD has spec.runtimePatches (kubeflow/trainer PR 3309, merged\n"
    "March 2026). Older trainer.kubeflow.org/v1alpha1 releases have spec.podTemplateOverrides instead: kubectl's\n"
    "strict validation refuses the unknown field, and without it the API server drops it, and with it the\n"
    "pods' /dev/shm, IPC_LOCK and volumes. On such a release use --flavor jobset."
)
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# A label key ([DNS subdomain/]name) and a label value, as Kubernetes validates them.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}")
_LABEL_VALUE = re.compile(rf"({_LABEL_NAME})?")


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
    resources: tuple[str, ...] = ()
    """More extended resources per pod, each `NAME=COUNT` (e.g. a second RDMA pool)."""
    host_network: bool = False
    network_annotation: str | None = None
    """The value of Multus' `k8s.v1.cni.cncf.io/networks` pod annotation (secondary networks)."""
    node_selector: tuple[str, ...] = ()
    """`KEY=VALUE` labels the nodes must carry."""
    tolerations: tuple[str, ...] = ()
    """`KEY[=VALUE][:EFFECT]` taints the pods tolerate."""
    compile_cache: str = "local"


def job_name(target: Target) -> str:
    """The TrainJob or JobSet name; its last pod's host name `<name>-<job>-0-<N-1>` must fit a DNS label."""
    name = f"titanbench-{dns_label(target.spec.model)}"
    hostname = f"{name}-{JOBSET_JOB}-0-{target.nodes - 1}"
    if len(hostname) > MAX_HOSTNAME:
        raise TitanbenchError(f"pod host name {hostname!r} is longer than {MAX_HOSTNAME} characters")
    return name


def _extended_resource(option: str, value: str, count_required: bool) -> tuple[str, int]:
    name, equals, count = value.partition("=")
    if not _LABEL_KEY.fullmatch(name) or "/" not in name or (equals and not count.isdigit()) or int(count or 1) < 1:
        form = "NAME=COUNT" if count_required else "NAME, optionally =COUNT"
        raise TitanbenchError(
            f"{option} {value!r}: expected an extended resource name such as rdma/hca_shared_devices_a, as {form}"
        )
    if count_required and not equals:
        raise TitanbenchError(f"{option} {value!r}: give the count per pod, NAME=COUNT")
    if name == GPU_RESOURCE:
        raise TitanbenchError(f"{option} {value!r}: the GPU count per pod comes from the model's topology")
    return name, int(count or 1)


def _resources(target: Target, options: K8sOptions) -> dict[str, Any]:
    amounts: dict[str, Any] = {GPU_RESOURCE: target.gpus_per_node}
    extended = [_extended_resource("--resource", value, True) for value in options.resources]
    if options.rdma_resource:
        extended.insert(0, _extended_resource("--rdma-resource", options.rdma_resource, False))
    for name, count in extended:
        if name in amounts:
            raise TitanbenchError(f"extended resource {name} is requested twice")
        amounts[name] = count
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _node_selector(options: K8sOptions) -> dict[str, str]:
    selector = {}
    for value in options.node_selector:
        key, equals, label = value.partition("=")
        if not equals or not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(label):
            raise TitanbenchError(
                f"--node-selector {value!r}: expected KEY=VALUE with a Kubernetes label key and value"
            )
        selector[key] = label
    return selector


def _tolerations(options: K8sOptions) -> list[dict[str, str]]:
    tolerations = []
    for value in options.tolerations:
        taint, colon, effect = value.rpartition(":") if ":" in value else (value, "", "")
        key, equals, taint_value = taint.partition("=")
        if (
            not _LABEL_KEY.fullmatch(key)
            or not _LABEL_VALUE.fullmatch(taint_value)
            or (colon and effect not in TAINT_EFFECTS)
        ):
            raise TitanbenchError(
                f"--toleration {value!r}: expected KEY[=VALUE][:EFFECT], EFFECT one of {', '.join(TAINT_EFFECTS)}"
            )
        # KEY=VALUE matches that value only; a bare KEY tolerates the taint whatever its value.
        toleration = (
            {"key": key, "operator": "Equal", "value": taint_value} if equals else {"key": key, "operator": "Exists"}
        )
        if effect:
            toleration["effect"] = effect
        tolerations.append(toleration)
    return tolerations


def _pod_annotations(options: K8sOptions) -> dict[str, str]:
    if options.network_annotation is None:
        return {}
    if not options.network_annotation.strip() or "\n" in options.network_annotation:
        raise TitanbenchError("--network-annotation: expected one line, e.g. roce-net or a JSON list of networks")
    return {MULTUS_ANNOTATION: options.network_annotation}


def _scheduling(options: K8sOptions) -> dict[str, Any]:
    """Pod spec fields for placement: node selector and tolerations, when given."""
    fields: dict[str, Any] = {}
    if options.node_selector:
        fields["nodeSelector"] = _node_selector(options)
    if options.tolerations:
        fields["tolerations"] = _tolerations(options)
    return fields


def _env(options: K8sOptions) -> list[dict[str, Any]]:
    # The image's $HOME may be absent or read-only: every Hugging Face cache goes to the claim, by name.
    return [{"name": "HF_HOME", "value": CONTAINER_HF_HOME}, _hf_token_env(options)]


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
        compile_cache_dir(options.compile_cache),
        *options.extra,
    ]


def _metadata(name: str, target: Target, options: K8sOptions) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if options.namespace:
        metadata["namespace"] = options.namespace
    metadata["labels"] = {"app.kubernetes.io/name": "titanbench", "titanbench/model": dns_label(target.spec.model)}
    return metadata


def trainjob(target: Target, options: K8sOptions) -> dict[str, Any]:
    if options.host_network:
        raise TitanbenchError(
            "--host-network needs --flavor jobset: a TrainJob's runtimePatches cannot set hostNetwork or dnsPolicy "
            "(set them in your own ClusterTrainingRuntime, or attach the fabric with --network-annotation)"
        )
    pod_patch = {
        "containers": [
            {
                "name": RUNTIME_CONTAINER,
                "securityContext": _SECURITY_CONTEXT,
                "volumeMounts": _volume_mounts(),
            }
        ],
        "volumes": _volumes(options),
        **_scheduling(options),
    }
    pod_template: dict[str, Any] = {"spec": pod_patch}
    annotations = _pod_annotations(options)
    if annotations:
        pod_template = {"metadata": {"annotations": annotations}, **pod_template}
    job_patch = {"name": RUNTIME_JOB, "template": {"spec": {"template": pod_template}}}
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
                "env": _env(options),
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


def _jobset_pod_spec(container: dict[str, Any], options: K8sOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "volumes": _volumes(options)}
    if options.host_network:
        # The host's NICs (RoCE netdevs included) in the pod; cluster DNS still resolves node 0's name.
        spec |= {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}
    return spec | _scheduling(options)


def _jobset_pod_template(container: dict[str, Any], options: K8sOptions) -> dict[str, Any]:
    annotations = _pod_annotations(options)
    template: dict[str, Any] = {"metadata": {"annotations": annotations}} if annotations else {}
    return template | {"spec": _jobset_pod_spec(container, options)}


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
            *_env(options),
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
        "template": _jobset_pod_template(container, options),
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
    obj = manifest(target, options)
    header = [f"Rendered by: {command_line}"] if command_line else []
    if options.flavor == "trainjob":
        header += TRAINER_REQUIREMENT.splitlines()
    return "".join(f"# {line}\n" for line in header) + yaml.safe_dump(obj, sort_keys=False, width=120)
