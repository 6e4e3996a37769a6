"""Node discovery: explicit flags > Slurm > Kubeflow (PET_*) > JobSet / Indexed Job > one node."""

import os
import stat

import pytest

from titanbench.errors import TitanbenchError
from titanbench.nodes import Explicit, discover_placement, slurm_hostnames
from titanbench.plan import DEFAULT_MASTER_PORT

SLURM = {"SLURM_JOB_ID": "42", "SLURM_NNODES": "4", "SLURM_NODEID": "2", "SLURM_JOB_NODELIST": "gpu[07-10]"}
KUBEFLOW = {"PET_NNODES": "4", "PET_NODE_RANK": "3", "PET_MASTER_ADDR": "job-node-0-0.job", "PET_MASTER_PORT": "29400"}
JOBSET = {"JOB_COMPLETION_INDEX": "1", "MASTER_ADDR": "bench-workers-0-0.bench", "MASTER_PORT": "23456"}


def hosts(nodelist: str) -> list[str]:
    assert nodelist == "gpu[07-10]"
    return ["gpu07", "gpu08", "gpu09", "gpu10"]


def test_one_node_without_a_scheduler():
    topology = discover_placement({}, Explicit(), 1)
    assert (topology.nnodes, topology.node_rank, topology.master_addr) == (1, 0, "127.0.0.1")
    assert topology.master_port == DEFAULT_MASTER_PORT
    assert topology.source == "one node"


def test_slurm_takes_node_zero_from_the_first_expanded_host():
    topology = discover_placement(SLURM, Explicit(), 4, hostnames=hosts)
    assert (topology.nnodes, topology.node_rank, topology.master_addr) == (4, 2, "gpu07")
    assert topology.source == "Slurm"
    assert "node 2 of 4" in topology.describe() and "gpu07" in topology.describe()


def test_kubeflow_pet_variables():
    topology = discover_placement(KUBEFLOW, Explicit(), 4)
    assert (topology.nnodes, topology.node_rank, topology.master_addr, topology.master_port) == (
        4,
        3,
        "job-node-0-0.job",
        29400,
    )


def test_kubeflow_falls_back_to_master_addr_and_accepts_a_fixed_elastic_range():
    env = {"PET_NNODES": "2:2", "PET_NODE_RANK": "1", "MASTER_ADDR": "m0", "MASTER_PORT": "29501"}
    topology = discover_placement(env, Explicit(), 2)
    assert (topology.nnodes, topology.node_rank, topology.master_addr, topology.master_port) == (2, 1, "m0", 29501)


def test_jobset_uses_the_completion_index_and_the_plan_node_count():
    topology = discover_placement(JOBSET, Explicit(), 8)
    assert (topology.nnodes, topology.node_rank, topology.master_addr, topology.master_port) == (
        8,
        1,
        "bench-workers-0-0.bench",
        23456,
    )
    assert topology.source == "JobSet / Indexed Job"


def test_slurm_wins_over_kubernetes_variables():
    assert discover_placement({**KUBEFLOW, **SLURM}, Explicit(), 4, hostnames=hosts).source == "Slurm"


def test_explicit_flags_beat_the_scheduler():
    topology = discover_placement(
        SLURM, Explicit(node_rank=1, master_addr="10.0.0.1", master_port=30000), 4, hostnames=hosts
    )
    assert (topology.node_rank, topology.master_addr, topology.master_port) == (1, "10.0.0.1", 30000)
    assert "overridden by flags" in topology.source


def test_explicit_master_addr_needs_no_scontrol():
    def no_scontrol(nodelist: str) -> list[str]:
        raise AssertionError("scontrol must not run when --master-addr is given")

    topology = discover_placement(SLURM, Explicit(master_addr="10.0.0.1"), 4, hostnames=no_scontrol)
    assert topology.master_addr == "10.0.0.1"


def test_a_scheduler_node_count_that_disagrees_with_the_plan_is_an_error():
    with pytest.raises(TitanbenchError, match=r"Slurm gives 4 node\(s\) but the plan has 8"):
        discover_placement(SLURM, Explicit(), 8, hostnames=hosts)
    with pytest.raises(TitanbenchError, match="PET_"):
        discover_placement(KUBEFLOW, Explicit(), 2)


def test_many_nodes_without_scheduler_or_flags_is_an_error_not_localhost():
    with pytest.raises(TitanbenchError, match="--node-rank and --master-addr"):
        discover_placement({}, Explicit(), 2)
    topology = discover_placement({}, Explicit(node_rank=1, master_addr="127.0.0.1"), 2)
    assert (topology.nnodes, topology.node_rank, topology.source) == (2, 1, "flags")


def test_node_rank_outside_the_run_is_an_error():
    with pytest.raises(TitanbenchError, match=r"outside 0\.\.1"):
        discover_placement({}, Explicit(node_rank=2, master_addr="127.0.0.1"), 2)


def test_garbage_in_a_scheduler_variable_is_a_clear_error():
    with pytest.raises(TitanbenchError, match="PET_NODE_RANK='x'"):
        discover_placement({**KUBEFLOW, "PET_NODE_RANK": "x"}, Explicit(), 4)


def test_slurm_without_nodeid_asks_for_srun():
    env = {k: v for k, v in SLURM.items() if k != "SLURM_NODEID"}
    with pytest.raises(TitanbenchError, match="srun"):
        discover_placement(env, Explicit(), 4, hostnames=hosts)


def _fake_scontrol(tmp_path, monkeypatch, script: str) -> None:
    path = tmp_path / "scontrol"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_scontrol_output_is_expanded(tmp_path, monkeypatch):
    _fake_scontrol(tmp_path, monkeypatch, 'test "$*" = "show hostnames gpu[07-08]" && printf "gpu07\\ngpu08\\n"\n')
    assert slurm_hostnames("gpu[07-08]") == ["gpu07", "gpu08"]


def test_scontrol_failure_stops_with_its_message_never_localhost(tmp_path, monkeypatch):
    _fake_scontrol(tmp_path, monkeypatch, 'echo "scontrol: error: Invalid node name" >&2; exit 1\n')
    with pytest.raises(TitanbenchError, match="Invalid node name"):
        discover_placement(SLURM, Explicit(), 4)


def test_missing_scontrol_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TitanbenchError, match="cannot run `scontrol"):
        discover_placement(SLURM, Explicit(), 4)


def test_kubeflow_without_a_node_rank_is_an_error_not_node_zero_everywhere():
    env = {k: v for k, v in KUBEFLOW.items() if k != "PET_NODE_RANK"}
    with pytest.raises(TitanbenchError, match="neither PET_NODE_RANK nor RANK is set"):
        discover_placement(env, Explicit(), 4)
    assert discover_placement({**env, "RANK": "2"}, Explicit(), 4).node_rank == 2


@pytest.mark.parametrize(
    "extra",
    [{"SLURM_LOCALID": "3"}, {"SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "32"}],
    ids=["second task on a node", "node 0's first of eight tasks"],
)
def test_slurm_with_several_tasks_per_node_is_refused(extra):
    with pytest.raises(TitanbenchError, match="several tasks per node: run titanbench with `srun --ntasks-per-node=1`"):
        discover_placement({**SLURM, **extra}, Explicit(), 4, hostnames=hosts)


def test_slurm_one_task_per_node_passes():
    env = {**SLURM, "SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "4"}
    assert discover_placement(env, Explicit(), 4, hostnames=hosts).node_rank == 2
