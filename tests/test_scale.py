"""The drivers' coordination at 8 simulated nodes on loopback, through `bench/scale_sim.py` (one driver,
one torchrun and one stand-in trainer per node): a matrix with a SIGTERMed follower, a resume with a
SIGKILLed one, a resume to the end. Its figures at 2 to 32 nodes are in docs/reliability.md."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "scale_sim.py"
LIVENESS_TIMEOUT = 20.0  # the default
GRACE_PERIOD = 5.0  # scale_sim's --grace-period: node 0's own torchrun stops within it
SLACK = 15.0  # a loaded 2-core machine


def scale_sim():
    spec = importlib.util.spec_from_file_location("scale_sim", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.torchrun
def test_eight_nodes_agree_notice_a_dead_follower_in_bound_resume_and_leave_nothing():
    row = scale_sim().simulate(8, LIVENESS_TIMEOUT)
    assert row["exit"] == "0", row
    assert (row["left1"], row["left2"], row["left3"]) == (0, 0, 0), row
    # Heartbeats: the liveness timeout plus one beat (a fifth of it), then node 0 stops its own torchrun.
    assert row["sigkill"] < LIVENESS_TIMEOUT * 1.2 + GRACE_PERIOD + SLACK, row
