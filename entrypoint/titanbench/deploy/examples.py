"""The launch files committed under `deploy/`, rendered by the `titanbench deploy` commands themselves.

python -m titanbench.deploy.examples [DIR]      (`make deploy`; DIR defaults to ./deploy)
"""

import sys
from pathlib import Path

# Where a cluster pulls the image from: push it with `make push REGISTRY=...` and put its tag
# (`titanbench docker --print-image`) in place of TAG. pyxis writes `registry#repository`.
K8S_IMAGE = "registry.example.com/team/titanbench:TAG"
PYXIS_IMAGE = "registry.example.com#team/titanbench:TAG"

# path under DIR -> `titanbench deploy` arguments. Time limits: the published step counts at the
# published speeds, plus compilation, with margin (8B: ~3 s a step; 70B: ~27 s a step, 900 steps).
EXAMPLES: dict[str, list[str]] = {
    "slurm/llama3_8b.sbatch": ["slurm", "--model", "llama3_8b", "--image", PYXIS_IMAGE, "--time", "02:00:00"],
    "slurm/llama3_70b.sbatch": ["slurm", "--model", "llama3_70b", "--image", PYXIS_IMAGE, "--time", "10:00:00"],
    "slurm/llama3_8b.no-container.sbatch": ["slurm", "--model", "llama3_8b", "--time", "02:00:00", "--no-container"],
    "k8s/llama3_8b.trainjob.yaml": ["k8s", "--model", "llama3_8b", "--flavor", "trainjob", "--image", K8S_IMAGE],
    "k8s/llama3_70b.trainjob.yaml": ["k8s", "--model", "llama3_70b", "--flavor", "trainjob", "--image", K8S_IMAGE],
    "k8s/llama3_8b.jobset.yaml": ["k8s", "--model", "llama3_8b", "--flavor", "jobset", "--image", K8S_IMAGE],
    "k8s/llama3_70b.jobset.yaml": ["k8s", "--model", "llama3_70b", "--flavor", "jobset", "--image", K8S_IMAGE],
    # RoCE: the RDMA device plugin's resource (NVIDIA Network Operator's shared-device plugin names it
    # rdma/rdma_shared_device_a) and a Multus network that brings the RoCE netdev into the pod.
    "k8s/llama3_70b.roce.trainjob.yaml": [
        "k8s",
        "--model",
        "llama3_70b",
        "--flavor",
        "trainjob",
        "--image",
        K8S_IMAGE,
        "--rdma-resource",
        "rdma/rdma_shared_device_a=1",
        "--network-annotation",
        "roce-net",
        "--toleration",
        "nvidia.com/gpu:NoSchedule",
    ],
}


def write_examples(root: Path) -> list[Path]:
    from titanbench.commands.deploy import deploy

    written = []
    for relative, args in EXAMPLES.items():
        path = root / relative
        deploy.main([*args, "--out", str(path)], prog_name="titanbench deploy", standalone_mode=False)
        written.append(path)
    return written


if __name__ == "__main__":
    write_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy"))
