"""Planted faults in the drivers' coordination, two drivers on 127.0.0.1: a follower killed, node 0 stopped
(SIGSTOP) or killed mid-config, a node that never joins, an address that does not resolve, a rendezvous that
fails. Each is noticed within a bound and leaves no process behind."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_run import cluster, driver_env, invoke, result, start, wait_for

LIVENESS = 4.0
# Generous: the promise is the liveness timeout plus a fifth of it; a loaded 2-core machine adds seconds.
BOUND = 2 * LIVENESS + 10


def leftovers(tmp_path: Path) -> list[str]:
    """Processes still running for this test's run (torchrun and its workers name tmp_path in their argv)."""
    found = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True, check=False).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def no_leftovers(tmp_path: Path) -> None:
    deadline = time.monotonic() + 15
    while leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers(tmp_path)


def ended_within(proc: subprocess.Popen, seconds: float) -> float:
    """Seconds `proc` took to end, failing if it runs past `seconds`."""
    started = time.monotonic()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running {seconds:g} s later")
    return time.monotonic() - started


def two_nodes(tmp_path: Path, env0=None, env1=None):
    """Node 0 and node 1 on the stand-in matrix; each one's console goes to nodeR.out."""
    common = cluster(2, "--run-id", "r", "--only", "vanilla-bf16", "--only", "async-bf16", "--grace-period", "3",
                     "--liveness-timeout", str(LIVENESS))  # fmt: skip
    out0, out1 = tmp_path / "node0.out", tmp_path / "node1.out"
    node1 = start(tmp_path, *common, "--node-rank", "1", "--results", str(tmp_path / "node1"),
                  env=env1 or driver_env(), output=out1)  # fmt: skip
    node0 = start(tmp_path, *common, "--node-rank", "0", "--results", str(tmp_path / "node0"),
                  env=env0 or driver_env(), output=out0)  # fmt: skip
    return node0, node1, out0, out1


HUNG = driver_env(STAND_IN_HANG="vanilla-bf16")


@pytest.mark.torchrun
def test_a_follower_killed_mid_config_is_noticed_by_node_0_within_the_liveness_bound(tmp_path):
    node0, node1, out0, _ = two_nodes(tmp_path, HUNG, HUNG)
    wait_for(tmp_path / "node1" / "r" / "stand_in" / "vanilla-bf16" / "node1.log", "step:  1", node1)
    node1.kill()  # no bye: only its silence tells
    node1.wait()
    ended_within(node0, BOUND + 3 + 5)  # + the grace period of node 0's own torchrun
    assert node0.returncode == 1, out0.read_text()
    stopped = result(tmp_path / "node0" / "r", "vanilla-bf16")
    assert stopped["status"] == "interrupted"
    assert stopped["nodes"]["1"].startswith("lost: node 1's driver sent no heartbeat for 4 s")
    assert stopped["reason"].count("sent no heartbeat") == 1, stopped["reason"]
    assert not (tmp_path / "node0" / "r" / "stand_in" / "async-bf16").exists()
    no_leftovers(tmp_path)


@pytest.mark.torchrun
def test_a_silent_node_0_is_noticed_by_the_follower_within_the_liveness_bound(tmp_path):
    node0, node1, _, out1 = two_nodes(tmp_path, HUNG, HUNG)
    wait_for(tmp_path / "node1" / "r" / "stand_in" / "vanilla-bf16" / "node1.log", "step:  1", node1)
    node0.send_signal(signal.SIGSTOP)
    try:
        ended_within(node1, BOUND + 3)
    finally:
        node0.send_signal(signal.SIGCONT)
        node0.send_signal(signal.SIGTERM)
        node0.wait(60)
    output = out1.read_text()
    assert node1.returncode == 1, output
    assert "Error: node 0's driver has not answered for 4 s (--liveness-timeout)" in output
    assert "Traceback" not in output
    no_leftovers(tmp_path)


@pytest.mark.torchrun
def test_a_killed_node_0_ends_the_follower_with_titanbench_words_only(tmp_path):
    # The user's own C++ log level is what torchrun gets; the driver's console stays clean anyway.
    env = {k: v for k, v in HUNG.items() if k != "TORCH_CPP_LOG_LEVEL"}
    node0, node1, _, out1 = two_nodes(tmp_path, env, env)
    wait_for(tmp_path / "node1" / "r" / "stand_in" / "vanilla-bf16" / "node1.log", "step:  1", node1)
    node0.kill()
    node0.wait()
    ended_within(node1, BOUND + 3)
    output = out1.read_text()
    assert node1.returncode == 1, output
    assert output.splitlines()[-1].startswith("Error: lost contact with node 0's driver") or (
        "Error: node 0's driver" in output.splitlines()[-1]
    ), output
    assert "frame #" not in output and "Exception raised from" not in output and "Traceback" not in output
    no_leftovers(tmp_path)


@pytest.mark.torchrun
def test_node_0_honours_its_join_timeout_within_seconds(tmp_path):
    common = cluster(2, "--results", str(tmp_path / "results"), "--join-timeout", "3")
    node0 = start(tmp_path, *common, "--node-rank", "0")
    started = time.monotonic()
    output, _ = node0.communicate(timeout=60)
    took = time.monotonic() - started
    assert node0.returncode == 1 and "timed out waiting for node(s) 1 to join (--join-timeout 3 s)" in output, output
    assert took < 3 + 10, f"{took:.0f} s for a 3 s --join-timeout"


def test_an_unresolvable_master_addr_is_one_line_before_any_torchrun(tmp_path):
    outcome = invoke("--model", str(Path(__file__).parent / "data" / "specs" / "stand_in.yaml"), "--nodes", "2",
                     "--node-rank", "1", "--master-addr", "node0.invalid", "--results", str(tmp_path),
                     "--join-timeout", "600")  # fmt: skip
    assert outcome.exit_code == 1
    last = outcome.output.strip().splitlines()[-1]
    assert last.startswith("Error: node 0's address 'node0.invalid' (--master-addr) does not resolve on this node")
    assert "Traceback" not in outcome.output
    assert not list(tmp_path.rglob("*.log"))


def test_liveness_timeout_is_an_option_with_an_environment_variable(tmp_path):
    from click.testing import CliRunner

    from titanbench.cli import main

    shown = CliRunner().invoke(main, ["run", "--help"]).output
    assert "--liveness-timeout" in shown and "TITANBENCH_LIVENESS_TIMEOUT" in shown
    outcome = CliRunner().invoke(main, ["run", "--nodes", "1"], env={"TITANBENCH_LIVENESS_TIMEOUT": "-1"})
    assert outcome.exit_code == 2 and "liveness-timeout" in outcome.output
