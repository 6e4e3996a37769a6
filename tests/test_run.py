"""`titanbench run` end to end: real drivers, real torchrun, real gloo, on 127.0.0.1 only.

The trainer is the stand-in (tests/stand_in_trainer.py), told per config to crash, hang or log NaN.
Two nodes are two `titanbench run` processes with node ranks 0 and 1 on this host.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from titanbench import results
from titanbench.cli import main
from titanbench.coordinate import Coordinator
from titanbench.launch import Outcome
from titanbench.logparse import LogScan, scan_text
from titanbench.options import RunOptions, locations_from, overrides_from, resolve_device
from titanbench.pins import pins
from titanbench.plan import ConfigPlan, Rendezvous, build_plan
from titanbench.results import RunRecord, archive_log, previous_attempts
from titanbench.runner import classify
from titanbench.spec import Topology, resolve_models

TESTS = Path(__file__).resolve().parent
SPEC = TESTS / "data" / "specs" / "stand_in.yaml"
SECRET = "s3cr3t-hub-token-value"
DRIVER_TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def driver_env(**stand_in: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAND_IN_", "SLURM_", "PET_", "TITANBENCH_"))}
    env.pop("JOB_COMPLETION_INDEX", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["STAND_IN_STEP_SECONDS"] = "0.02"
    env["HF_TOKEN"] = SECRET
    env.update(stand_in)
    return env


def cluster(nodes: int, *extra: str) -> list[str]:
    """What every node of a cluster simulated on 127.0.0.1 is given: the matrix, node 0 and two free ports."""
    return ["--model", str(SPEC), "--nodes", str(nodes), "--master-addr", "127.0.0.1",
            "--master-port", str(free_port()), "--coord-port", str(free_port()), *extra]  # fmt: skip


def start(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, output: Path | None = None
) -> subprocess.Popen:
    """A `titanbench run` driver; its output is read at the end, or is written to `output` as it comes."""
    argv = [sys.executable, "-c", "from titanbench.cli import main; main()", "run", "--trainer", "stand_in_trainer"]
    return subprocess.Popen(
        [*argv, "--torchtitan-dir", str(tmp_path), *args],
        env=env or driver_env(),
        cwd=cwd,
        stdout=output.open("w") if output else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=DRIVER_TIMEOUT)
    return proc.returncode, output


def wait_for(path: Path, text: str, proc: subprocess.Popen) -> None:
    """Until `path` holds `text`, while `proc` runs."""
    deadline = time.monotonic() + DRIVER_TIMEOUT
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, f"{text!r} never came in {path}"
        time.sleep(0.1)


def wait_until_gone(pattern: str) -> None:
    """Until no process has `pattern` in its command line."""
    deadline = time.monotonic() + DRIVER_TIMEOUT
    while any(pattern in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
              for cmdline in Path("/proc").glob("[0-9]*/cmdline") if cmdline.exists()):  # fmt: skip
        assert time.monotonic() < deadline, f"a process with {pattern!r} outlived its driver"
        time.sleep(0.2)


def one_node(tmp_path: Path, *args: str) -> list[str]:
    return ["--model", str(SPEC), "--nodes", "1", "--tp", "1", "--results", str(tmp_path / "results"),
            "--master-port", str(free_port()), *args]  # fmt: skip


def result(run_dir: Path, config: str) -> dict:
    return json.loads((run_dir / "stand_in" / config / "result.json").read_text())


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.torchrun
def test_a_node_whose_nccl_falls_back_to_sockets_leaves_the_config_unverified_naming_it(tmp_path):
    # One results folder for both nodes (shared storage): node 0 reads node 1's log too.
    common = cluster(2, "--run-id", "net", "--only", "vanilla-bf16", "--only", "async-bf16",
                     "--results", str(tmp_path / "results"))  # fmt: skip
    node1 = start(tmp_path, *common, "--node-rank", "1", env=driver_env(STAND_IN_SOCKETS="async-bf16"))
    node0 = start(tmp_path, *common, "--node-rank", "0")
    (code0, out0), (code1, _) = finish(node0), finish(node1)
    assert (code0, code1) == (1, 1), out0
    run_dir = tmp_path / "results" / "net"
    fine, fallen = result(run_dir, "vanilla-bf16"), result(run_dir, "async-bf16")
    assert fine["status"] == "ok", fine
    assert {rank: t["description"] for rank, t in fine["transport"].items()} == {
        "0": "IB, GPUDirect RDMA",
        "1": "IB, GPUDirect RDMA",
    }
    assert fallen["status"] == "unverified"
    assert fallen["reason"].startswith("node 1: NCCL used TCP sockets between nodes (NET/Socket)"), fallen
    assert fallen["transport"]["1"]["networks"] == ["Socket"]


@pytest.mark.torchrun
def test_two_nodes_on_loopback_complete_a_matrix_and_exit_with_node_0s_verdict(tmp_path):
    common = cluster(2, "--run-id", "two", "--only", "vanilla-bf16", "--only", "async-bf16")
    # Separate results folders: node 1 follows node 0's decisions without ever reading its files.
    node1 = start(tmp_path, *common, "--node-rank", "1", "--results", str(tmp_path / "node1"))
    # Only node 0's log shows a NaN loss: node 1's own runs end well, but the verdict is node 0's.
    node0 = start(tmp_path, *common, "--node-rank", "0", "--results", str(tmp_path / "node0"),
                  env=driver_env(STAND_IN_NAN="async-bf16"))  # fmt: skip
    (code0, out0), (code1, out1) = finish(node0), finish(node1)
    assert code0 == 1, out0
    assert code1 == 1 and "node 0 says done: matrix finished (exit status 1)" in out1, out1
    assert "node 0 of 2, node 0 at 127.0.0.1" in out0
    assert "node 1 of 2" in out1

    run_dir = tmp_path / "node0" / "two"
    for config in ("vanilla-bf16", "async-bf16"):
        entry = result(run_dir, config)
        assert entry["status"] == ("ok" if config == "vanilla-bf16" else "invalid")
        assert entry["nodes"] == {"0": "ok", "1": "ok"}
        assert entry["last_step"] == 20
        log = (run_dir / "stand_in" / config / "train.log").read_text()
        assert "step: 20" in log
        # One compile cache per config, under the results root unless --cache-dir says otherwise.
        assert f"Inductor cache: {tmp_path / 'node0' / 'cache' / 'stand_in' / config / 'inductor'}" in log
        assert "step: 20" in (tmp_path / "node1" / "two" / "stand_in" / config / "node1.log").read_text()
    assert not (run_dir / "stand_in" / "vanilla-float8_tensorwise").exists()

    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished"
    assert (run["topology"]["nnodes"], run["topology"]["node_rank"]) == (2, 0)
    assert [c["config"] for c in run["configs"]] == ["vanilla-bf16", "async-bf16"]
    assert set(run["timings"]) == {"stand_in/vanilla-bf16", "stand_in/async-bf16"}
    assert run["environment"]["pins"]
    assert run["pins"]["TORCHTITAN_COMMIT"] == pins()["TORCHTITAN_COMMIT"]
    assert not any(key.startswith("CI_") for key in run["pins"]), "CI-only pins are not the benchmark's"
    assert run["fingerprint"]

    document = json.loads((run_dir / "results.json").read_text())
    assert "async-bf16" in json.dumps(document)
    assert (run_dir / "RESULTS.md").is_file()
    # Node 1 writes logs only: results and run.json are node 0's.
    assert not list((tmp_path / "node1").rglob("*.json"))
    for files in (files_under(tmp_path / "node0"), files_under(tmp_path / "node1")):
        assert not [name for name, data in files.items() if SECRET.encode() in data]


@pytest.mark.torchrun
def test_sigterm_marks_the_running_config_interrupted_and_resume_finishes_it(tmp_path):
    run_dir = tmp_path / "results" / "r"
    second = run_dir / "stand_in" / "async-bf16"
    # Relative paths, from tmp_path: run.json records them resolved, so a resume works from anywhere.
    args = ["--model", str(SPEC), "--nodes", "1", "--tp", "1", "--results", "results", "--torchtitan-dir", ".",
            "--master-port", str(free_port()), "--run-id", "r", "--only", "vanilla-bf16", "--only", "async-bf16",
            "--grace-period", "5"]  # fmt: skip
    # The hung worker also ignores SIGTERM: torchrun takes the whole grace period to stop.
    env = driver_env(STAND_IN_HANG="async-bf16", STAND_IN_IGNORE_SIGTERM="async-bf16")
    proc = start(tmp_path, *args, env=env, cwd=tmp_path)
    wait_for(second / "train.log", "step:  1", proc)
    proc.send_signal(signal.SIGTERM)
    # Written at once, not after the grace period: a scheduler's SIGKILL may come first.
    wait_for(second / "result.json", '"interrupted"', proc)
    assert proc.poll() is None, "written while torchrun is still stopping"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert result(run_dir, "async-bf16")["reason"] == f"signal {signal.SIGTERM.value}, stopping"
    code, output = finish(proc)
    assert code == 128 + signal.SIGTERM, output
    assert result(run_dir, "vanilla-bf16")["status"] == "ok"
    interrupted = result(run_dir, "async-bf16")
    assert interrupted["status"] == "interrupted"
    assert "SIGTERM" in interrupted["reason"]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted"
    assert (run["request"]["results"], run["request"]["torchtitan_dir"]) == (str(tmp_path / "results"), str(tmp_path))
    first_config = files_under(run_dir / "stand_in" / "vanilla-bf16")
    hung_log = (second / "train.log").read_text()

    # Resume from run.json (the paths given again, absolute, from another directory): only the interrupted
    # config runs.
    resume = ["--resume", str(run_dir), "--results", str(tmp_path / "results"), "--master-port", str(free_port())]
    code, output = finish(start(tmp_path, *resume, cwd=TESTS))
    assert code == 0, output
    assert "stand_in/vanilla-bf16: ok in an earlier attempt, kept" in output
    assert files_under(run_dir / "stand_in" / "vanilla-bf16") == first_config
    resumed = result(run_dir, "async-bf16")
    assert resumed["status"] == "ok"
    assert resumed["attempt"] == 2
    assert resumed["previous_logs"] == ["train.log.attempt1"]
    assert (second / "train.log.attempt1").read_text() == hung_log
    assert "step: 20" in (second / "train.log").read_text()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished" and len(run["sessions"]) == 2

    # Options given again must agree with the recorded run.
    refused = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--steps", "30"])
    assert refused.exit_code == 1
    assert "options disagree with the recorded run: --steps 30 (the run has none)" in refused.output


@pytest.mark.torchrun
def test_repeat_interleaves_the_trials_and_resume_runs_only_the_missing_one(tmp_path):
    run_dir = tmp_path / "results" / "rep"
    folders = {config: run_dir / "stand_in" / config for config in ("vanilla-bf16", "async-bf16")}
    args = one_node(tmp_path, "--run-id", "rep", "--only", "vanilla-bf16", "--only", "async-bf16", "--repeat", "2")
    # async-bf16 hangs on its second launch only: trial 2, the last of the four.
    first = tmp_path / "first.out"
    proc = start(tmp_path, *args, env=driver_env(STAND_IN_HANG_LAUNCH="async-bf16:2"), output=first)
    wait_for(folders["async-bf16"] / "train.trial2.log", "step:  1", proc)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == 128 + signal.SIGTERM, first.read_text()
    output = first.read_text()
    verdicts = [line for line in output.splitlines() if line.startswith("[") and ": " in line]
    assert verdicts[:3] == [
        "[1/4] stand_in/vanilla-bf16 trial 1: ok",
        "[2/4] stand_in/async-bf16 trial 1: ok",
        "[3/4] stand_in/vanilla-bf16 trial 2: ok",
    ], output
    assert verdicts[3].startswith("[4/4] stand_in/async-bf16 trial 2: interrupted"), output
    vanilla, hung = result(run_dir, "vanilla-bf16"), result(run_dir, "async-bf16")
    started = sorted(
        (t["started_at"], config, t["trial"]) for config in folders for t in result(run_dir, config)["trials"]
    )
    assert [(config, trial) for _, config, trial in started] == [
        ("vanilla-bf16", 1), ("async-bf16", 1), ("vanilla-bf16", 2), ("async-bf16", 2)
    ]  # fmt: skip
    assert (vanilla["status"], vanilla["repeat"], [t["log"] for t in vanilla["trials"]]) == (
        "ok", 2, ["train.trial1.log", "train.trial2.log"]
    )  # fmt: skip
    assert (hung["status"], [t["status"] for t in hung["trials"]]) == ("interrupted", ["ok", "interrupted"])
    assert not (folders["vanilla-bf16"] / "train.log").exists()
    assert json.loads((run_dir / "run.json").read_text())["request"]["repeat"] == 2
    kept = {config: files_under(folder) for config, folder in folders.items()}
    async_trial1 = hung["trials"][0]

    resume = ["--resume", str(run_dir), "--master-port", str(free_port())]
    code, output = finish(start(tmp_path, *resume))
    assert code == 0, output
    assert "stand_in/vanilla-bf16: ok in an earlier attempt, kept" in output
    assert "stand_in/async-bf16 trial 1: ok in an earlier attempt, kept" in output
    assert [line for line in output.splitlines() if line.startswith("[") and ": " in line] == [
        "[1/1] stand_in/async-bf16 trial 2: ok"
    ], output
    assert files_under(folders["vanilla-bf16"]) == kept["vanilla-bf16"]
    # Every async file is still there, byte for byte; the interrupted trial's log as its first attempt.
    now = files_under(folders["async-bf16"])
    for name, data in kept["async-bf16"].items():
        if name != results.RESULT_FILE and not name.startswith("outputs"):
            assert now[name.replace("trial2.log", "trial2.log.attempt1")] == data, name
    resumed = result(run_dir, "async-bf16")
    assert resumed["status"] == "ok" and resumed["trials"][0] == async_trial1
    assert (resumed["trials"][1]["attempt"], resumed["trials"][1]["previous_logs"]) == (
        2,
        ["train.trial2.log.attempt1"],
    )
    assert "step: 20" in (folders["async-bf16"] / "train.trial2.log").read_text()

    document = json.loads((run_dir / "results.json").read_text())
    configs = {c["config"]: c for c in document["models"][0]["configs"]}
    for config in folders:
        entry = configs[config]
        means = [t["measured_tps"] for t in entry["trials"]]
        assert [t["trial"] for t in entry["trials"]] == [1, 2] and None not in means
        assert entry["measured_tps"] == pytest.approx(sum(means) / 2)
        assert entry["trials_stdev_tps"] == pytest.approx(abs(means[0] - means[1]) / math.sqrt(2))
        assert entry["interval"] == {"method": "trial means", "se": pytest.approx(abs(means[0] - means[1]) / 2),
                                     "df": 1, "trials": 2}  # fmt: skip
    assert configs["async-bf16"]["speedup_ci95"]
    markdown = (run_dir / "RESULTS.md").read_text()
    assert "- vanilla-bf16 (2 trials, between-trial stdev" in markdown
    assert "Configs run several times (`run --repeat N`)" in markdown

    refused = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--repeat", "3"])
    assert refused.exit_code == 1
    assert "options disagree with the recorded run: --repeat 3 (the run has 2)" in refused.output


@pytest.mark.torchrun
def test_until_stable_stops_a_steady_config_early_and_lets_a_noisy_one_run_its_steps(tmp_path):
    run_dir = tmp_path / "results" / "st"
    args = one_node(tmp_path, "--run-id", "st", "--only", "vanilla-bf16", "--only", "async-bf16", "--steps", "300",
                    "--until-stable", "1")  # fmt: skip
    env = driver_env(STAND_IN_STEADY="vanilla-bf16", STAND_IN_NOISY="async-bf16")
    code, output = finish(start(tmp_path, *args, env=env))
    assert code == 0, output
    steady, noisy = result(run_dir, "vanilla-bf16"), result(run_dir, "async-bf16")
    # 8 averaged windows after the warm-up (20, ..., 90), and the interval is tight: stopped at step 90.
    assert steady["status"] == "ok" and steady["reason"] == "", steady
    stopped = steady["stopped_early"]
    assert (stopped["at_step"], stopped["planned_steps"], stopped["gpus"]) == (90, 300, 2)
    assert 0 <= stopped["half_width_pct"] <= 1 and stopped["step_s"] > 0
    assert 90 <= steady["last_step"] < 300
    assert "step: 300" not in (run_dir / "stand_in" / "vanilla-bf16" / "train.log").read_text()
    assert "[1/2] stand_in/vanilla-bf16: ok (stopped at step 90 of 300: the 95% interval is within" in output
    assert (noisy["status"], noisy["last_step"], "stopped_early" in noisy) == ("ok", 300, False)

    deviation = (
        "stops when the 95% interval is within +-1% of the mean (--until-stable), not at the published step count"
    )
    run = json.loads((run_dir / "run.json").read_text())
    assert run["request"]["until_stable"] == 1
    assert all(deviation in run["deviations"][key] for key in ("stand_in/vanilla-bf16", "stand_in/async-bf16"))
    document = json.loads((run_dir / "results.json").read_text())
    configs = {c["config"]: c for c in document["models"][0]["configs"]}
    saved = (300 - steady["last_step"]) * stopped["step_s"] * 2 / 3600
    assert configs["vanilla-bf16"]["gpu_hours_saved"] == pytest.approx(saved)
    assert configs["vanilla-bf16"]["stopped_early"]["last_step"] == steady["last_step"]
    assert "stopped_early" not in configs["async-bf16"]
    assert document["until_stable"]["pct"] == 1 and document["until_stable"]["runs_stopped"] == 1
    assert document["until_stable"]["gpu_hours_saved"] == pytest.approx(saved)
    markdown = (run_dir / "RESULTS.md").read_text()
    assert any(line.startswith("- vanilla-bf16: ") and line.endswith(deviation) for line in markdown.splitlines())
    assert "- vanilla-bf16: at step 90 of 300 (95% interval within +-" in markdown
    assert "### Stopped early (`--until-stable 1`)" in markdown
    assert "1 run(s) stopped before their planned step: about " in markdown


@pytest.mark.torchrun
def test_until_stable_on_two_nodes_is_node_0s_decision_and_the_matrix_goes_on(tmp_path):
    common = cluster(2, "--run-id", "st2", "--only", "vanilla-bf16", "--only", "async-bf16", "--steps", "300",
                     "--until-stable", "1", "--grace-period", "10")  # fmt: skip
    env = driver_env(STAND_IN_STEADY="vanilla-bf16")
    node1 = start(tmp_path, *common, "--node-rank", "1", "--results", str(tmp_path / "node1"), env=env)
    node0 = start(tmp_path, *common, "--node-rank", "0", "--results", str(tmp_path / "node0"), env=env)
    (code0, out0), (code1, out1) = finish(node0), finish(node1)
    run_dir = tmp_path / "node0" / "st2"
    stopped, drifting = result(run_dir, "vanilla-bf16"), result(run_dir, "async-bf16")
    # Node 1's torchrun ends because node 0's did: as a failure on node 1, expected, recorded as it is.
    assert stopped["status"] == "ok" and stopped["stopped_early"]["at_step"] == 90, (stopped, out0, out1)
    assert stopped["nodes"]["0"] == "stopped" and stopped["nodes"]["1"] in ("ok", "failed")
    assert (drifting["status"], drifting["last_step"], drifting["nodes"]) == ("ok", 300, {"0": "ok", "1": "ok"})
    assert (code0, code1) == (0, 0), out0 + out1


@pytest.mark.torchrun
def test_a_node_stopped_mid_config_stops_the_matrix_on_node_0(tmp_path):
    common = cluster(2, "--run-id", "lost", "--only", "vanilla-bf16", "--only", "async-bf16", "--grace-period", "10")
    node1_log = tmp_path / "node1" / "lost" / "stand_in" / "vanilla-bf16" / "node1.log"
    node1 = start(tmp_path, *common, "--node-rank", "1", "--results", str(tmp_path / "node1"),
                  env=driver_env(STAND_IN_HANG="vanilla-bf16"))  # fmt: skip
    node0 = start(tmp_path, *common, "--node-rank", "0", "--results", str(tmp_path / "node0"))
    wait_for(node1_log, "step:  1", node1)
    node1.send_signal(signal.SIGTERM)  # only node 1 is preempted
    (code0, out0), (code1, out1) = finish(node0), finish(node1)
    assert code1 == 128 + signal.SIGTERM, out1
    # Node 0 does not start the next config (its torchrun would wait for node 1 until the rendezvous timeout).
    assert code0 == 1, out0
    assert "the matrix stopped: node 1 interrupted" in out0
    run_dir = tmp_path / "node0" / "lost"
    stopped = result(run_dir, "vanilla-bf16")
    assert stopped["status"] in ("failed", "interrupted") and "node 1 interrupted" in stopped["reason"]
    assert stopped["nodes"]["1"] == "interrupted"
    assert not (run_dir / "stand_in" / "async-bf16").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


@pytest.mark.torchrun
def test_a_signal_while_the_nodes_meet_exits_128_plus_the_signal_and_node_0_learns_of_it(tmp_path):
    common = cluster(3, "--results", str(tmp_path / "results"), "--join-timeout", "120")
    out0, out1 = tmp_path / "node0.out", tmp_path / "node1.out"
    node0 = start(tmp_path, *common, "--node-rank", "0", output=out0)
    node1 = start(tmp_path, *common, "--node-rank", "1", output=out1)
    # Node 2 never comes: node 1 waits for the verdict, node 0 for node 2.
    wait_for(out1, "waiting for its verdict", node1)
    node1.send_signal(signal.SIGTERM)
    assert node1.wait(DRIVER_TIMEOUT) == 128 + signal.SIGTERM, out1.read_text()
    # Node 2, late, hears why the run stopped: node 0 stays until it has.
    code2, out2 = finish(start(tmp_path, *common, "--node-rank", "2"))
    assert code2 == 1 and "Error: node 0 stopped: node 1 stopped: stopped by a signal" in out2, out2
    assert node0.wait(DRIVER_TIMEOUT) == 1, out0.read_text()
    assert "Error: node 1 stopped: stopped by a signal while waiting for node 0's verdict" in out0.read_text()

    # Node 0 itself, signalled while it waits for the others to join.
    node0 = start(tmp_path, *common, "--node-rank", "0", "--coord-port", str(free_port()), output=out0)
    wait_for(out0, "waiting for the other 2 node(s) to join", node0)
    node0.send_signal(signal.SIGINT)
    assert node0.wait(DRIVER_TIMEOUT) == 128 + signal.SIGINT, out0.read_text()
    assert "Traceback" not in out0.read_text() + out1.read_text()


def test_a_follower_never_starts_a_config_node_0_has_left():
    port = free_port()
    leader = Coordinator("127.0.0.1", port, 2, 0, join_timeout=30, stop=lambda: False)
    follower = Coordinator("127.0.0.1", port, 2, 1, join_timeout=30, stop=lambda: False)
    leader.announce({"config": "m/a", "index": 1, "total": 2})
    assert follower.next(lambda: False)["config"] == "m/a"
    assert follower.is_current()
    follower.finished("ok")
    assert leader.collect(lambda: False) == {1: "ok"}
    leader.announce({"config": "m/b", "index": 2, "total": 2})
    # Node 0 gives up on m/b (this node was too slow) and moves on before the follower reads it.
    assert leader.collect(lambda: True) == {1: "no report: stopped by a signal while waiting for node 1 to finish "
                                                "(for 120 s)"}  # fmt: skip
    leader.announce({"done": "stopped", "exit": 1})
    assert follower.next(lambda: False)["config"] == "m/b"
    assert not follower.is_current()
    follower.leave("gone")
    assert leader.collect(lambda: True) == {1: "left: gone"}


@pytest.mark.torchrun
def test_crash_stall_and_nan_each_get_a_status_and_the_matrix_goes_on(tmp_path):
    env = driver_env(
        STAND_IN_CRASH="vanilla-bf16",
        STAND_IN_HANG="async-bf16",
        STAND_IN_NAN="vanilla-float8_tensorwise",
    )
    proc = start(
        tmp_path, *one_node(tmp_path, "--run-id", "bad", "--stall-timeout", "10", "--grace-period", "10"), env=env
    )
    code, output = finish(proc)
    assert code == 1, output
    run_dir = tmp_path / "results" / "bad"

    crashed = result(run_dir, "vanilla-bf16")
    assert crashed["status"] == "failed"
    assert crashed["returncode"] not in (0, None)
    assert "crashing as told" in (run_dir / "stand_in" / "vanilla-bf16" / "train.log").read_text()
    assert any("exitcode  : 3" in line for line in crashed["log_tail"])  # torchrun's failure summary

    stalled = result(run_dir, "async-bf16")
    assert stalled["status"] == "stalled"
    assert stalled["last_step"] == 1

    invalid = result(run_dir, "vanilla-float8_tensorwise")
    assert invalid["status"] == "invalid"
    assert invalid["returncode"] == 0
    assert "NaN loss at step 1, 10, 20" in invalid["reason"]

    # One verdict per config on the console, after classification (never `ok` first).
    assert "stand_in/vanilla-float8_tensorwise: invalid: NaN loss at step 1, 10, 20" in output
    assert "stand_in/vanilla-float8_tensorwise: ok" not in output
    assert (run_dir / "RESULTS.md").is_file()


@pytest.mark.torchrun
def test_a_failure_names_its_root_cause_from_the_workers_error_file(tmp_path):
    env = driver_env(STAND_IN_RAISE="vanilla-bf16")
    code, output = finish(start(tmp_path, *one_node(tmp_path, "--run-id", "r", "--only", "vanilla-bf16"), env=env))
    assert code == 1, output
    cause = "RuntimeError: stand-in trainer: Found no NVIDIA driver on your system (STAND_IN_RAISE)"
    failed = result(tmp_path / "results" / "r", "vanilla-bf16")
    assert (failed["status"], failed["reason"]) == ("failed", f"torchrun exited with status 1: {cause}")
    assert output.count(f"stand_in/vanilla-bf16: failed: torchrun exited with status 1: {cause}") == 1
    assert cause in (tmp_path / "results" / "r" / "RESULTS.md").read_text()


@pytest.mark.torchrun
def test_a_node_with_a_different_plan_is_refused_on_both_sides(tmp_path):
    common = cluster(2, "--results", str(tmp_path / "results"), "--join-timeout", "60")
    node1 = start(tmp_path, *common, "--node-rank", "1", "--steps", "30")
    node0 = start(tmp_path, *common, "--node-rank", "0")
    (code0, out0), (code1, out1) = finish(node0), finish(node1)
    assert code0 == 1 and "Error: nodes disagree on the plan: node 0 has plan" in out0, out0
    assert code1 == 1 and "Error: node 0 refuses this node" in out1, out1
    assert "Traceback" not in out0 + out1
    assert not list((tmp_path / "results").rglob("train.log"))


@pytest.mark.torchrun
def test_a_node_that_cannot_build_the_plan_stops_node_0_at_once(tmp_path):
    common = cluster(2, "--results", str(tmp_path / "results"), "--join-timeout", "600")
    node0 = start(tmp_path, *common, "--node-rank", "0")
    node1 = start(tmp_path, *common, "--node-rank", "1", "--torchtitan-dir", str(tmp_path / "absent"))
    (code0, out0), (code1, out1) = finish(node0), finish(node1)
    assert code1 == 1 and "absent: no such directory" in out1, out1
    assert code0 == 1 and "Error: node 1 stopped: --torchtitan-dir" in out0, out0


@pytest.mark.torchrun
def test_when_node_0_stops_before_the_matrix_the_other_node_stops_with_its_reason(tmp_path):
    (tmp_path / "results" / "taken").mkdir(parents=True)
    (tmp_path / "results" / "taken" / "run.json").write_text("{}")
    common = cluster(2, "--results", str(tmp_path / "results"), "--join-timeout", "60")
    # Node 0 first: it fails before node 1 has even connected, and must still tell it why.
    node0 = start(tmp_path, *common, "--node-rank", "0", "--run-id", "taken")
    node1 = start(tmp_path, *common, "--node-rank", "1")
    (code0, out0), (code1, out1) = finish(node0), finish(node1)
    assert code0 == 1 and "already holds a run" in out0, out0
    assert code1 == 1 and "Error: node 0 stopped:" in out1 and "already holds a run" in out1, out1


# ---- bad input: one line, exit 1, nothing launched ------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(main, ["run", "--trainer", "stand_in_trainer", *args])


def test_run_id_and_resume_exclude_each_other(tmp_path):
    outcome = invoke("--run-id", "x", "--resume", str(tmp_path))
    assert outcome.exit_code == 1
    assert outcome.output.strip() == "Error: --run-id and --resume exclude each other: a resumed run keeps its id"


def test_resume_without_run_json_is_an_error(tmp_path):
    outcome = invoke("--resume", str(tmp_path), "--model", str(SPEC), "--nodes", "1", "--tp", "1")
    assert outcome.exit_code == 1
    assert "no run.json there: nothing to resume" in outcome.output
    # With no --model either (a node with node-local results has no run.json, or no folder at all).
    outcome = invoke("--resume", str(tmp_path / "absent"), "--node-rank", "1", "--master-addr", "127.0.0.1")
    assert outcome.exit_code == 1
    assert "nothing to resume (on a node other than node 0, with node-local results, give the same --model" in (
        outcome.output
    )


def test_resume_of_a_run_json_without_its_request_is_an_error(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    outcome = invoke("--resume", str(tmp_path))
    assert outcome.exit_code == 1
    assert (
        outcome.output.strip() == f"Error: --resume {tmp_path}: its run.json records no request: it cannot be resumed"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("nodes", "two"), ("only", 5), ("gpu_mem_gib", "lots"), ("device", "tpu"), ("no_profiling", "maybe")],
)
def test_resume_with_a_wrongly_typed_request_field_is_one_line_naming_it(tmp_path, field, value):
    (tmp_path / "run.json").write_text(json.dumps({"request": {"model": str(SPEC), field: value}}))
    outcome = invoke("--resume", str(tmp_path))
    assert outcome.exit_code == 1
    assert outcome.output.startswith(f"Error: {tmp_path / 'run.json'}: request.{field}")
    assert outcome.output.count("\n") == 1 and "Traceback" not in outcome.output


def test_resume_with_options_that_disagree_names_each_one_as_run_json_has_it(tmp_path):
    recorded = {"model": str(SPEC), "steps": 20, "trainer": "stand_in_trainer", "only": ["async-bf16"]}
    (tmp_path / "run.json").write_text(json.dumps({"request": recorded}))
    outcome = invoke("--resume", str(tmp_path), "--steps", "30", "--only", "vanilla-bf16", "--nodes", "1")
    assert outcome.exit_code == 1
    assert outcome.output.strip() == (
        f"Error: --resume {tmp_path}: options disagree with the recorded run: --nodes 1 (the run has none); "
        "--only ['vanilla-bf16'] (the run has ['async-bf16']); --steps 30 (the run has 20)"
    )


def test_run_options_round_trip_through_run_json_to_the_same_launch_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given = RunOptions(
        model=str(SPEC), nodes=1, gpus_per_node=2, tp=1, steps=30, no_profiling=True, dataset="c4",
        dataset_path="c4", allow_fp32=True, gpu_mem_gib=40.5, force=True, device="cuda",
        trainer="stand_in_trainer", torchtitan_dir=Path("."), results=Path("results"), cache_dir=Path("cache"),
        trace_dir=Path("traces"), only=("vanilla-bf16", "async-bf16"), repeat=3, accept_socket_transport=True,
        until_stable=2.5,
    ).absolute()  # fmt: skip
    results.write_run(tmp_path, RunRecord(request=given))
    request = json.loads((tmp_path / "run.json").read_text())["request"]
    assert set(request) == set(RunOptions.model_fields)
    assert (request["results"], request["only"]) == (str(tmp_path / "results"), ["vanilla-bf16", "async-bf16"])

    def launch_plans(options: RunOptions) -> list[ConfigPlan]:
        specs = resolve_models(options.model)
        return build_plan(
            specs, overrides_from(options), Rendezvous(), locations_from(options, "r"), trainer=options.trainer,
            device=resolve_device(options.device, specs), only=options.only,
        )  # fmt: skip

    monkeypatch.chdir(TESTS)  # read back from elsewhere: run.json's paths are absolute
    recorded = results.read_run(tmp_path)
    assert recorded is not None and recorded.request == given
    plans = launch_plans(recorded.request)
    assert plans == launch_plans(given) and [p.config for p in plans] == ["vanilla-bf16", "async-bf16"]
    assert (
        plans[0].workdir == str(tmp_path) and f"--training.dataset_path={tmp_path / 'c4'}" in plans[0].torchtitan_args
    )


def test_many_nodes_without_a_scheduler_or_node_flags_is_an_error(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith(("SLURM_", "PET_"))] + ["JOB_COMPLETION_INDEX"]:
        monkeypatch.delenv(name, raising=False)
    outcome = invoke("--model", str(SPEC), "--results", str(tmp_path))
    assert outcome.exit_code == 1
    assert "the plan has 2 nodes but no scheduler was detected" in outcome.output


def test_missing_torchtitan_dir_is_an_error(tmp_path):
    outcome = invoke("--model", str(SPEC), "--nodes", "1", "--tp", "1", "--results", str(tmp_path),
                     "--torchtitan-dir", str(tmp_path / "absent"))  # fmt: skip
    assert outcome.exit_code == 1
    assert "absent: no such directory" in outcome.output


def test_unknown_only_config_is_an_error(tmp_path):
    outcome = invoke("--model", str(SPEC), "--nodes", "1", "--tp", "1", "--only", "nope", "--results", str(tmp_path))
    assert outcome.exit_code == 1
    assert "--only 'nope' matches no config" in outcome.output


def test_an_existing_run_is_not_started_again(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{}")
    outcome = invoke("--model", str(SPEC), "--nodes", "1", "--tp", "1", "--results", str(tmp_path), "--run-id", "r")
    assert outcome.exit_code == 1
    assert "already holds a run: pick another --run-id or --resume it" in outcome.output


# ---- classification and log keeping ---------------------------------------------------------------


def _plan(
    tp_type: str, quantization: str, trainer: str = "torchtitan.train", steps: int = 20, nodes: int = 1, **extra
) -> ConfigPlan:
    return ConfigPlan(
        model="m", config="c", tp_type=tp_type, quantization=quantization, steps=steps,
        topology=Topology(nodes=nodes, gpus_per_node=8, tp=8, fsdp=nodes), torchtitan_args=[], bundle_flags=[],
        launcher_argv=[], env={}, env_reasons={}, deviations=[], published_tps=None, workdir=".",
        trainer=trainer, **extra,
    )  # fmt: skip


def _ok() -> Outcome:
    return Outcome("ok", 0, "", "t0", "t1", 1.0, 20, 100.0, [])


def _log(*lines: str, loss: float = 8.5, steps: tuple[int, ...] = (1, 10, 20)) -> LogScan:
    from logfactory import Metrics, metrics_message, titan_line

    metrics = [titan_line(metrics_message(Metrics(step=s, tps=100, loss=loss))) for s in steps]
    return scan_text("\n".join([*(titan_line(line) for line in lines), *metrics]))


def test_async_config_without_the_async_line_is_unverified():
    status, reason = classify(_ok(), _log(), _plan("async", "bf16"))
    assert status == "unverified" and "Async Tensor Parallelism" in reason
    applied = _log("Applied Async Tensor Parallelism to the model")
    assert classify(_ok(), applied, _plan("async", "bf16")) == ("ok", "")


def test_float8_recipe_must_match_the_config():
    rowwise = _log("Float8 training active with recipe rowwise")
    assert classify(_ok(), rowwise, _plan("vanilla", "float8_rowwise")) == ("ok", "")
    status, reason = classify(_ok(), rowwise, _plan("vanilla", "float8_tensorwise"))
    assert status == "unverified" and "expected tensorwise" in reason
    status, _ = classify(_ok(), _log(), _plan("vanilla", "float8_rowwise"))
    assert status == "unverified"


def test_evidence_is_not_checked_for_another_trainer():
    assert classify(_ok(), _log(), _plan("async", "float8_rowwise", trainer="stand_in_trainer")) == ("ok", "")


def test_the_cpu_launcher_is_torchtitan_so_its_evidence_is_checked():
    status, reason = classify(_ok(), _log(), _plan("async", "bf16", trainer="titanbench.cpu_trainer"))
    assert status == "unverified" and "Async Tensor Parallelism" in reason


def test_a_multi_node_gpu_config_on_tcp_sockets_is_unverified_for_any_trainer():
    sockets = _log("gpu001:41:41 [0] NCCL INFO Using network Socket")
    for trainer in ("torchtitan.train", "a_fork.train"):
        status, reason = classify(_ok(), sockets, _plan("vanilla", "bf16", trainer=trainer, nodes=2))
        assert status == "unverified" and reason.startswith("node 0: NCCL used TCP sockets"), reason
    accepted = _plan("vanilla", "bf16", trainer="x", nodes=2, accept_socket_transport=True)
    assert classify(_ok(), sockets, accepted) == ("ok", "")
    # One node (NVLink, no network between nodes) and CPU runs (gloo, no NCCL) have no transport to prove.
    assert classify(_ok(), _log(), _plan("vanilla", "bf16", trainer="x")) == ("ok", "")
    assert classify(_ok(), _log(), _plan("vanilla", "bf16", trainer="x", nodes=2, device="cpu")) == ("ok", "")
    status, reason = classify(_ok(), _log(), _plan("vanilla", "bf16", trainer="x", nodes=2))
    assert status == "unverified" and "names no NCCL network" in reason


def test_a_log_that_stops_short_of_the_planned_steps_is_incomplete():
    status, reason = classify(_ok(), _log(steps=(1, 5)), _plan("vanilla", "bf16", trainer="x", steps=12))
    assert (status, reason) == ("incomplete", "torchrun exited 0 but the log stops at step 5 of 12")


def test_a_log_stopped_early_by_until_stable_is_not_incomplete():
    stopped = Outcome("stopped", -15, "stopped at step 90 of 300: ...", "t0", "t1", 1.0, 90, 100.0, [])
    short = _log(steps=(1, *range(10, 91, 10)))
    plan = _plan("vanilla", "bf16", trainer="x", steps=300)
    assert classify(stopped, short, plan) == ("ok", "")
    # The same log from a torchrun that ended by itself is short of its steps.
    assert classify(_ok(), short, plan) == ("incomplete", "torchrun exited 0 but the log stops at step 90 of 300")
    # Stopped early, the log is still checked as any other.
    status, reason = classify(stopped, _log(loss=math.nan, steps=(1, *range(10, 91, 10))), plan)
    assert (status, reason) == ("invalid", "NaN loss at step 1, 10, 20, 30, 40, 50, 60, 70, 80, 90")


def test_no_window_left_after_warm_up_and_profiler_dumps_is_no_data():
    dumped = _log("Dumping profiler traces at step 20", steps=(1, 5, 10, 20))
    status, reason = classify(_ok(), dumped, _plan("vanilla", "bf16", trainer="x"))
    assert status == "no-data"
    assert "5 (warm-up" in reason and "20 (profiler" in reason


def test_nan_loss_is_invalid_and_no_metrics_is_failed():
    status, reason = classify(_ok(), _log(loss=math.nan), _plan("vanilla", "bf16", trainer="x"))
    assert (status, reason) == ("invalid", "NaN loss at step 1, 10, 20")
    status, reason = classify(_ok(), scan_text("no metrics here\n"), _plan("vanilla", "bf16", trainer="x"))
    assert status == "failed" and "no metrics line" in reason


def test_a_failed_outcome_keeps_its_own_status():
    outcome = Outcome("stalled", -15, "no output for --stall-timeout 5 s", "t0", "t1", 1.0, 1, None, [])
    assert classify(outcome, _log(), _plan("vanilla", "bf16")) == ("stalled", outcome.reason)


def test_earlier_logs_are_kept_as_numbered_attempts(tmp_path):
    log = tmp_path / "train.log"
    assert archive_log(log) is None
    for attempt in ("first", "second"):
        log.write_text(attempt)
        archive_log(log)
    assert not log.exists()
    assert (tmp_path / "train.log.attempt1").read_text() == "first"
    assert (tmp_path / "train.log.attempt2").read_text() == "second"


def test_previous_attempts_are_listed_in_attempt_order(tmp_path):
    log = tmp_path / "train.log"
    for _ in range(11):
        log.write_text("attempt")
        archive_log(log)
    (tmp_path / "train.log.attempt-notes").write_text("not an attempt")
    assert previous_attempts(log) == [f"train.log.attempt{n}" for n in range(1, 12)]


@pytest.mark.torchtitan
def test_missing_torchtitan_checkout_stops_before_any_torchrun(tmp_path):
    pytest.importorskip("torchtitan.config_manager")
    empty = tmp_path / "not-a-checkout"
    empty.mkdir()
    outcome = CliRunner().invoke(
        main,
        [
            "run",
            "--model",
            "8b",
            "--nodes",
            "1",
            "--tp",
            "4",
            "--torchtitan-dir",
            str(empty),
            "--results",
            str(tmp_path / "results"),
            "--run-id",
            "r",
        ],
    )
    assert outcome.exit_code == 1
    last = outcome.output.strip().splitlines()[-1]
    assert last.startswith("Error: llama3_8b/vanilla-bf16: no torchtitan/models/llama3/train_configs/llama3_8b.toml")
    assert "Traceback" not in outcome.output
    assert not list((tmp_path / "results").glob("r/llama3_8b/*/train.log")), "no config may have started"


@pytest.mark.torchrun
def test_a_config_that_cannot_run_on_cpu_is_skipped_with_its_reason_and_fails_nothing(tmp_path):
    spec = tmp_path / "cpu_matrix.yaml"
    text = SPEC.read_text().replace("model: stand_in", "model: stand_in\ncpu: {processes_per_node: 2}")
    spec.write_text(
        text.replace(
            "flags: --parallelism.enable_async_tensor_parallel}",
            'flags: --parallelism.enable_async_tensor_parallel, cpu: {skip: "no CPU path for this one"}}',
        )
    )
    args = [
        "--model",
        str(spec),
        "--device",
        "cpu",
        "--nodes",
        "1",
        "--tp",
        "1",
        "--results",
        str(tmp_path / "results"),
    ]
    args += ["--master-port", str(free_port())]
    code, output = finish(start(tmp_path, *args, "--run-id", "r"))
    assert code == 0, output
    run_dir = tmp_path / "results" / "r"
    skipped = json.loads((run_dir / "stand_in" / "async-bf16" / "result.json").read_text())
    assert (skipped["status"], skipped["reason"]) == ("skipped", "not run on cpu: no CPU path for this one")
    assert not (run_dir / "stand_in" / "async-bf16" / "train.log").exists()
    assert result(run_dir, "vanilla-bf16")["status"] == "ok"
    assert "skipped: not run on cpu: no CPU path for this one" in (run_dir / "RESULTS.md").read_text()
    # Resumed, nothing is rerun and the skip stands.
    code, output = finish(start(tmp_path, "--resume", str(run_dir), "--master-port", str(free_port())))
    assert code == 0, output
    assert "stand_in/async-bf16: skipped" in output and "[1/" not in output


@pytest.mark.parametrize("run_id", ["../x", "/tmp/abs", ".", "..", "a/b", "", "-flag", "x" * 200])
def test_a_run_id_is_one_plain_name_inside_the_results_directory(tmp_path, run_id):
    """Planted: ids that would write run files outside the results directory or into its root."""
    results = tmp_path / "results"
    outcome = invoke("--model", str(SPEC), "--results", str(results), "--run-id", run_id)
    assert outcome.exit_code == 2 and "a run id is one plain name under --results" in outcome.output
    assert list(tmp_path.iterdir()) == []


def test_a_master_port_with_no_room_for_the_coordination_port_is_refused(tmp_path):
    args = ("--model", str(SPEC), "--nodes", "2", "--master-addr", "127.0.0.1", "--results", str(tmp_path))
    outcome = invoke(*args, "--node-rank", "0", "--master-port", "65535", "--join-timeout", "5")
    assert outcome.exit_code == 1
    assert "master port 65535 leaves no port for the drivers' coordination" in outcome.output
    assert "Traceback" not in outcome.output


@pytest.mark.torchrun
def test_a_run_directory_has_one_driver_and_a_dead_ones_lock_does_not_outlive_it(tmp_path):
    """Planted: a second run on the same --run-id, and a --resume, while the first runs; then the
    first is SIGKILLed (no cleanup of its own) and a resume must get the directory."""
    run_dir = tmp_path / "results" / "r"
    args = ["--model", str(SPEC), "--nodes", "1", "--tp", "1", "--results", str(tmp_path / "results"),
            "--only", "vanilla-bf16"]  # fmt: skip
    first = start(tmp_path, *args, "--run-id", "r", "--master-port", str(free_port()),
                  env=driver_env(STAND_IN_HANG="vanilla-bf16"))  # fmt: skip
    log = run_dir / "stand_in" / "vanilla-bf16" / "train.log"
    wait_for(log, "step:  1", first)
    before = log.read_text()
    for again in (["--run-id", "r"], ["--resume", str(run_dir)]):
        code, output = finish(start(tmp_path, *args, *again, "--master-port", str(free_port())))
        assert code == 1, output
        assert f"Error: {run_dir} is in use by another titanbench run (pid {first.pid} on " in output
        assert "[1/1]" not in output  # refused before any torchrun
    assert log.read_text().startswith(before) and not list(log.parent.glob("train.log.attempt*"))
    first.kill()
    first.wait()
    code, output = finish(start(tmp_path, "--resume", str(run_dir), "--master-port", str(free_port())))
    assert code == 0, output
    assert result(run_dir, "vanilla-bf16")["status"] == "ok"


@pytest.mark.torchrun
def test_a_token_the_trainer_leaks_is_never_in_clear_in_the_results_tree_even_after_sigkill(tmp_path):
    """Planted: the trainer prints the token (torchrun's rank logs) and writes it into its dump folder
    (outputs/); the driver is SIGKILLed mid-config, then the run is resumed."""
    run_dir = tmp_path / "results" / "r"
    ranks = run_dir / "stand_in" / "vanilla-bf16" / "ranks"
    # Its own temp dir: the private rank-log directory, and the torchrun this test stops, are found there.
    private = tmp_path / "tmp"
    private.mkdir()
    env = driver_env(STAND_IN_LEAK="vanilla-bf16", STAND_IN_HANG="vanilla-bf16", TMPDIR=str(private))
    first = start(tmp_path, *one_node(tmp_path, "--run-id", "r", "--only", "vanilla-bf16"), env=env)
    wait_for(run_dir / "stand_in" / "vanilla-bf16" / "train.log", "step:  1", first)
    first.kill()
    first.wait()
    # torchrun stops with its driver (SIGTERM on the driver's death); the resume may take its logs after.
    wait_until_gone(f"--log-dir {private}")
    assert list(ranks.rglob("*")) == [], "no rank log reaches the results tree before it is scrubbed"

    code, output = finish(start(tmp_path, "--resume", str(run_dir), "--master-port", str(free_port()),
                                env=driver_env(STAND_IN_LEAK="vanilla-bf16", TMPDIR=str(private))))  # fmt: skip
    assert code == 0, output
    files = files_under(run_dir)
    assert not [name for name, data in files.items() if SECRET.encode() in data]
    leaked = [name for name in files if name.endswith(("stdout.log", "leak-rank0.txt"))]
    # Both attempts' rank logs (the killed one's delivered by the resume) and the dump-folder file, masked.
    launches = {name.split("/")[4] for name in leaked if name.endswith("stdout.log")}
    assert len(launches) == 2, sorted(files)
    assert all(b"***" in files[name] for name in leaked)
    assert SECRET not in output


def test_resume_with_a_corrupted_record_stops_before_touching_anything(tmp_path):
    run_dir = tmp_path / "r"
    log = run_dir / "stand_in" / "vanilla-bf16" / "train.log"
    log.parent.mkdir(parents=True)
    log.write_text("step:  1  loss: 1.0  tps: 5\n")
    (log.parent / "result.json").write_text('{"status": "failed"}')
    (run_dir / "run.json").write_text(json.dumps({"request": {"model": str(SPEC)}, "timings": []}))
    outcome = invoke("--resume", str(run_dir))
    assert outcome.exit_code == 1
    assert outcome.output.startswith(f"Error: {run_dir / 'run.json'}: timings: ") and outcome.output.count("\n") == 1
    assert sorted(p.name for p in log.parent.iterdir()) == ["result.json", "train.log"]  # nothing renamed


@pytest.mark.torchrun
def test_a_disk_that_fills_mid_run_is_one_error_line_and_every_record_stays_whole(tmp_path, monkeypatch):
    """Planted: the second config's result.json cannot be written (ENOSPC)."""
    import errno

    from titanbench import results as layout

    write = layout.write_json

    def full_for_the_second_result(path, data):
        if path.name == "result.json" and path.parent.name == "async-bf16" and data.get("status") != "interrupted":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(layout, "write_json", full_for_the_second_result)
    for name, value in driver_env().items():
        monkeypatch.setenv(name, value)
    outcome = invoke(*one_node(tmp_path, "--run-id", "r", "--torchtitan-dir", str(tmp_path)))
    assert outcome.exit_code == 1, outcome.output
    assert outcome.output.splitlines()[-1].startswith("Error: cannot write ") and "No space left" in outcome.output
    assert "Traceback" not in outcome.output
    run_dir = tmp_path / "results" / "r"
    assert result(run_dir, "vanilla-bf16")["status"] == "ok"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and "No space left" in run["sessions"][-1]["stopped"]
    assert not list(run_dir.rglob("*.tmp"))


def test_a_dataset_url_with_credentials_is_refused_before_anything_is_written(tmp_path):
    """Planted: credentials in a --dataset-path URL would be recorded in run.json and every command line."""
    outcome = invoke(
        *one_node(tmp_path, "--torchtitan-dir", str(tmp_path), "--dataset-path", "https://bob:pa55w0rd@h/c4")
    )
    assert outcome.exit_code == 1 and outcome.output.count("\n") == 1, outcome.output
    assert "pa55w0rd" not in outcome.output and "Traceback" not in outcome.output
    assert not (tmp_path / "results").exists()


def test_a_dataset_url_is_recorded_as_given_not_as_a_local_path(tmp_path):
    options = RunOptions(model="smoke", dataset_path="hf://datasets/allenai/c4", results=Path("results")).absolute()
    results.write_run(tmp_path, RunRecord(request=options))
    recorded = json.loads((tmp_path / "run.json").read_text())["request"]
    assert recorded["dataset_path"] == "hf://datasets/allenai/c4"
    assert recorded["results"] == str(Path("results").resolve())
    assert results.read_run(tmp_path).request.dataset_path == "hf://datasets/allenai/c4"


def test_a_repeated_config_is_ok_only_when_every_trial_is():
    from titanbench.runner import combined_status

    def trial(number: int, status: str, reason: str = "") -> results.TrialResult:
        return results.TrialResult(trial=number, status=status, reason=reason)

    assert combined_status([trial(1, "ok"), trial(2, "ok")], 2) == ("ok", "")
    assert combined_status([trial(1, "ok")], 2) == ("incomplete", "1 of 2 trials run")
    failed = [trial(1, "unverified", "no evidence"), trial(2, "failed", "exit code 3")]
    assert combined_status(failed, 3) == ("failed", "trial 2: exit code 3")
    assert combined_status([trial(1, "ok"), trial(2, "unverified", "x")], 2) == ("unverified", "trial 2: x")
