"""Which node this is: node count, node rank and node 0's address, from flags or the scheduler.

Order (first match wins): explicit flags; Slurm; Kubeflow Trainer / PyTorchJob (`PET_*`); JobSet or
an Indexed Job (`JOB_COMPLETION_INDEX` + `MASTER_ADDR`); else one node. Explicit flags override the
matching fields of whatever the environment says. A scheduler's node count must agree with the plan.
"""

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from titanbench.errors import TitanbenchError
from titanbench.plan import DEFAULT_MASTER_PORT


@dataclass(frozen=True)
class Explicit:
    """What the command line says (None: not given)."""

    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None


@dataclass(frozen=True)
class Placement:
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    source: str

    def describe(self) -> str:
        return (
            f"node {self.node_rank} of {self.nnodes}, node 0 at {self.master_addr}:{self.master_port} "
            f"(from {self.source})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def slurm_hostnames(nodelist: str) -> list[str]:
    """Expand a Slurm node list (`gpu[01-04]`) with `scontrol show hostnames`."""
    try:
        done = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise TitanbenchError(f"Slurm: cannot run `scontrol show hostnames {nodelist}`: {error}") from None
    hosts = done.stdout.split()
    if done.returncode != 0 or not hosts:
        detail = done.stderr.strip() or f"exit status {done.returncode}, no host names"
        raise TitanbenchError(f"Slurm: `scontrol show hostnames {nodelist}` failed: {detail}")
    return hosts


def _int(env: Mapping[str, str], name: str, source: str) -> int:
    value = env[name].strip()
    # torchrun-style elastic ranges ("2:2") name a fixed count when both ends agree.
    low, _, high = value.partition(":")
    if value.isdigit() or (low.isdigit() and low == high):
        return int(low)
    raise TitanbenchError(f"{source}: {name}={value!r} is not a node count or rank")


def _port(env: Mapping[str, str], names: tuple[str, ...], source: str) -> int:
    for name in names:
        if env.get(name):
            return _int(env, name, source)
    return DEFAULT_MASTER_PORT


def _node_rank(env: Mapping[str, str], source: str) -> int:
    """PET_NODE_RANK, else RANK (a PyTorchJob's pod index); never a silent 0 on every pod."""
    for name in ("PET_NODE_RANK", "RANK"):
        if name in env:
            return _int(env, name, source)
    raise TitanbenchError(f"{source}: neither PET_NODE_RANK nor RANK is set: cannot tell this node's rank")


SLURM, KUBEFLOW, JOBSET = "Slurm", "Kubeflow (PET_*)", "JobSet / Indexed Job"


def scheduler(env: Mapping[str, str]) -> str | None:
    """Which scheduler's variables `env` holds, in the order they are read; None: none."""
    if "SLURM_NNODES" in env and "SLURM_JOB_ID" in env:
        return SLURM
    if "PET_NNODES" in env:
        return KUBEFLOW
    if "JOB_COMPLETION_INDEX" in env and env.get("MASTER_ADDR"):
        return JOBSET
    return None


def _from_environment(
    env: Mapping[str, str], explicit: Explicit, expected_nodes: int, hostnames: Callable[[str], list[str]]
) -> Placement | None:
    source = scheduler(env)
    if source == SLURM:
        if "SLURM_NODEID" not in env:
            raise TitanbenchError("Slurm: SLURM_NODEID is not set: start titanbench with srun, one task per node")
        # One driver per node: torchrun starts the per-GPU processes. Several tasks per node would
        # start several drivers with the same node rank.
        tasks = env.get("SLURM_STEP_NUM_TASKS")
        if env.get("SLURM_LOCALID", "0") != "0" or (tasks and tasks != env["SLURM_NNODES"]):
            raise TitanbenchError(
                "Slurm: several tasks per node: run titanbench with `srun --ntasks-per-node=1` "
                "(torchrun starts the per-GPU processes)"
            )
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist and not explicit.master_addr:
            raise TitanbenchError("Slurm: SLURM_JOB_NODELIST is not set: cannot tell which host is node 0")
        return Placement(
            nnodes=_int(env, "SLURM_NNODES", source),
            node_rank=_int(env, "SLURM_NODEID", source),
            master_addr=explicit.master_addr or hostnames(nodelist or "")[0],
            master_port=DEFAULT_MASTER_PORT,
            source=source,
        )
    if source == KUBEFLOW:
        addr = env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR")
        if not addr:
            raise TitanbenchError(f"{source}: neither PET_MASTER_ADDR nor MASTER_ADDR is set")
        return Placement(
            nnodes=_int(env, "PET_NNODES", source),
            node_rank=_node_rank(env, source),
            master_addr=addr,
            master_port=_port(env, ("PET_MASTER_PORT", "MASTER_PORT"), source),
            source=source,
        )
    if source == JOBSET:
        return Placement(
            nnodes=expected_nodes,
            node_rank=_int(env, "JOB_COMPLETION_INDEX", source),
            master_addr=env["MASTER_ADDR"],
            master_port=_port(env, ("MASTER_PORT",), source),
            source=source,
        )
    return None


def discover_placement(
    env: Mapping[str, str],
    explicit: Explicit,
    expected_nodes: int,
    *,
    hostnames: Callable[[str], list[str]] = slurm_hostnames,
) -> Placement:
    """This node's place in a run of `expected_nodes` nodes (the plan's `--nodes`)."""
    found = _from_environment(env, explicit, expected_nodes, hostnames)
    if found and found.nnodes != expected_nodes:
        raise TitanbenchError(
            f"{found.source} gives {found.nnodes} node(s) but the plan has {expected_nodes} (--nodes): they must agree"
        )
    given = {k: v for k, v in asdict(explicit).items() if v is not None}
    if found is None:
        if expected_nodes > 1 and not {"node_rank", "master_addr"} <= given.keys():
            raise TitanbenchError(
                f"the plan has {expected_nodes} nodes but no scheduler was detected: pass --node-rank and "
                "--master-addr on every node (or --nodes 1)"
            )
        found = Placement(expected_nodes, 0, "127.0.0.1", DEFAULT_MASTER_PORT, "one node")
        source = "flags" if given else found.source
    else:
        source = f"{found.source}, overridden by flags" if given else found.source
    topology = Placement(**{**asdict(found), **given, "source": source})
    if not 0 <= topology.node_rank < topology.nnodes:
        raise TitanbenchError(f"node rank {topology.node_rank} is outside 0..{topology.nnodes - 1} ({source})")
    return topology
