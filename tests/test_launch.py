"""Supervising one launch: real child processes stand in for torchrun (fast, no torch)."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from logfactory import Metrics, metrics_message, titan_line
from titanbench.launch import Limits, Progress, Stop, launch, launcher_command, root_cause
from titanbench.plan import ConfigPlan

METRICS = titan_line(metrics_message(Metrics(step=10, tps=6567)))


def plan_running(code: str, tmp_path: Path, steps: int = 20) -> ConfigPlan:
    return ConfigPlan(
        model="m",
        config="c",
        tp_type="vanilla",
        quantization="bf16",
        steps=steps,
        topology={"nodes": 1, "gpus_per_node": 1, "tp": 1, "fsdp": 1},
        torchtitan_args=[],
        bundle_flags=[],
        launcher_argv=[sys.executable, "-u", "-c", textwrap.dedent(code)],
        env={"STAND_IN_MARK": "from-plan"},
        env_reasons={},
        deviations=[],
        published_tps=None,
        workdir=str(tmp_path),
        trainer="none",
    )


NO_LIMITS = Limits()


def run(code: str, tmp_path: Path, limits: Limits = NO_LIMITS, stop: Stop | None = None, **kwargs):
    log = tmp_path / "m" / "c" / "train.log"
    out = io.StringIO()
    outcome = launch(
        plan_running(code, tmp_path),
        log,
        limits,
        stop or Stop(),
        Progress(out, 1, 1, "m/c", 20),
        secrets=kwargs.pop("secrets", []),
        **kwargs,
    )
    return outcome, log.read_text(), out.getvalue()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_ok_run_keeps_its_output_and_the_last_metrics(tmp_path):
    code = f"""
        import os
        print("workdir", os.getcwd(), os.environ["STAND_IN_MARK"])
        print({METRICS!r})
    """
    outcome, log, progress = run(code, tmp_path)
    assert outcome.status == "ok" and outcome.returncode == 0
    assert (outcome.last_step, outcome.last_tps) == (10, 6567)
    assert f"workdir {tmp_path} from-plan" in log
    assert METRICS in log
    assert "[1/1] m/c  step 10/20  tps 6,567" in progress
    # The verdict is the runner's, printed once after the log is classified.
    assert ": ok" not in progress


def test_nonzero_exit_is_failed_with_exit_code_and_log_tail(tmp_path):
    outcome, _, _ = run("import sys; print('boom: out of memory'); sys.exit(3)", tmp_path)
    assert outcome.status == "failed"
    assert outcome.returncode == 3
    assert "exited with status 3" in outcome.reason
    assert outcome.log_tail[-1] == "boom: out of memory"


def test_silent_process_is_stopped_by_the_stall_timeout(tmp_path):
    code = """
        import time
        print("started", flush=True)
        time.sleep(600)
    """
    outcome, _, _ = run(code, tmp_path, Limits(stall_timeout=1, grace_period=5))
    assert outcome.status == "stalled"
    assert "--stall-timeout 1" in outcome.reason
    assert outcome.returncode == -signal.SIGTERM


def test_chatty_process_is_stopped_by_the_config_timeout_not_the_stall_timeout(tmp_path):
    code = """
        import time
        while True:
            print("working", flush=True)
            time.sleep(0.1)
    """
    outcome, _, _ = run(code, tmp_path, Limits(config_timeout=1.5, stall_timeout=30, grace_period=5))
    assert outcome.status == "timeout"
    assert "--config-timeout 1.5" in outcome.reason


def test_driver_signal_is_forwarded_and_the_config_marked_interrupted(tmp_path):
    code = """
        import signal, sys, time
        def leave(signum, frame):
            print("child got", signal.Signals(signum).name, flush=True)
            sys.exit(143)
        signal.signal(signal.SIGINT, leave)
        print("ready", flush=True)
        time.sleep(600)
    """
    stop = Stop()
    log = tmp_path / "m" / "c" / "train.log"

    def interrupt_when_ready():
        while "ready" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.05)
        stop.signal = signal.SIGINT

    seen: list[tuple[int, bool]] = []

    def on_stop(signum: int) -> None:
        # Called before the signal reaches the child: the config can be marked interrupted first.
        seen.append((signum, "child got" in log.read_text()))

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    outcome, text, _ = run(code, tmp_path, Limits(grace_period=10), stop=stop, on_stop=on_stop)
    assert outcome.status == "interrupted"
    assert "SIGINT" in outcome.reason
    assert "child got SIGINT" in text
    assert outcome.returncode == 143
    assert seen == [(signal.SIGINT, False)]


def test_grace_period_ends_in_sigkill_for_the_whole_tree_even_in_other_sessions(tmp_path):
    # Like torchrun's workers: a grandchild in a session of its own, both ignoring SIGTERM.
    worker_code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    code = f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        worker = subprocess.Popen(
            [sys.executable, "-c", {worker_code!r}],
            start_new_session=True,
        )
        print("worker", worker.pid, flush=True)
        time.sleep(600)
    """
    outcome, text, _ = run(code, tmp_path, Limits(stall_timeout=1, grace_period=1))
    assert outcome.status == "stalled"
    assert outcome.returncode == -signal.SIGKILL
    worker = int(text.split("worker ")[1].split()[0])
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


def test_secrets_never_reach_the_log(tmp_path):
    secret = "s3cr3t-value-not-shaped-like-a-token"
    code = "import os; print('token is', os.environ['HF_TOKEN'])"
    outcome, log, _ = run(code, tmp_path, secrets=[secret], environ={**os.environ, "HF_TOKEN": secret})
    assert outcome.status == "ok"
    assert "token is ***" in log
    assert secret not in log and secret not in "\n".join(outcome.log_tail)


def test_torchrun_runs_under_the_driver_interpreter(tmp_path):
    plan = plan_running("", tmp_path)
    plan.launcher_argv = ["torchrun", "--nnodes", "1", "-m", "x"]
    assert launcher_command(plan) == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "-m", "x"]


def test_progress_line_has_step_tps_elapsed_and_eta():
    out = io.StringIO()
    progress = Progress(out, 2, 6, "llama3_8b/async-bf16", 100)
    progress.update(1, 100.0)
    progress.update(10, 4809.0)
    first, tenth = out.getvalue().splitlines()
    assert re.fullmatch(r"\[2/6\] llama3_8b/async-bf16  step 1/100  tps 100  elapsed \d+:\d\d:\d\d", first)
    assert re.fullmatch(
        r"\[2/6\] llama3_8b/async-bf16  step 10/100  tps 4,809  elapsed \d+:\d\d:\d\d  ETA \d+:\d\d:\d\d", tenth
    )


def test_torchrun_does_not_inherit_pet_defaults(tmp_path):
    # torchrun reads PET_<OPTION> as defaults: an elastic PyTorchJob's PET_RDZV_BACKEND must not reach it.
    code = "import os; print('PET:', sorted(k for k in os.environ if k.startswith('PET_')), os.environ['KEEP'])"
    outcome, log, _ = run(code, tmp_path, environ={"PET_RDZV_BACKEND": "c10d", "PET_NNODES": "2", "KEEP": "yes"})
    assert outcome.status == "ok"
    assert "PET: [] yes" in log


def test_rank_log_files_are_scrubbed_of_secrets(tmp_path):
    ranks = tmp_path / "ranks"
    code = f"""
        import pathlib
        rank = pathlib.Path({str(ranks)!r}) / "attempt_0" / "1"
        rank.mkdir(parents=True)
        (rank / "stdout.log").write_text("token hf_rankSecret42 seen\\n")
        (rank / "stderr.log").write_text("nothing to hide\\n")
    """
    plan = plan_running(code, tmp_path)
    plan.rank_log_dir = str(ranks)
    out = io.StringIO()
    launch(plan, tmp_path / "train.log", NO_LIMITS, Stop(), Progress(out, 1, 1, "m/c", 20), secrets=["hf_rankSecret42"])
    assert (ranks / "attempt_0" / "1" / "stdout.log").read_text() == "token *** seen\n"
    assert (ranks / "attempt_0" / "1" / "stderr.log").read_text() == "nothing to hide\n"


def test_torchrun_dies_with_a_driver_killed_by_sigkill(tmp_path):
    # The driver itself in a process of its own, so that it can be SIGKILLed like an OOM kill.
    child_pid = tmp_path / "child.pid"
    driver = textwrap.dedent(f"""
        import io, sys, pathlib
        sys.path[:0] = {sys.path!r}
        from test_launch import plan_running, NO_LIMITS
        from titanbench.launch import Progress, Stop, launch
        code = ("import os, pathlib, time; "
                "pathlib.Path({str(child_pid)!r}).write_text(str(os.getpid())); time.sleep(600)")
        launch(plan_running(code, pathlib.Path({str(tmp_path)!r})), pathlib.Path({str(tmp_path / "train.log")!r}),
               NO_LIMITS, Stop(), Progress(io.StringIO(), 1, 1, "m/c", 20), secrets=[])
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver])
    deadline = time.monotonic() + 60
    while not (child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(child_pid.read_text())
    assert alive(pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "torchrun outlived its SIGKILLed driver"


def test_a_failure_without_an_error_file_names_the_last_exception_in_the_log(tmp_path):
    code = """
        import sys
        print("[rank0]:Traceback (most recent call last):")
        print("[rank0]:torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised: TypeError: bad", flush=True)
        print("[rank0]:[titan] cleanup done")
        sys.exit(1)
    """
    outcome, _, _ = run(code, tmp_path)
    assert outcome.reason == (
        "torchrun exited with status 1: "
        "torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised: TypeError: bad"
    )


def test_the_earliest_recorded_worker_error_is_the_root_cause(tmp_path):
    for rank, (stamp, message) in enumerate([("200", "RuntimeError: a peer went away"), ("100", "ValueError: first")]):
        error = tmp_path / "attempt_0" / str(rank) / "error.json"
        error.parent.mkdir(parents=True)
        error.write_text(json.dumps({"message": {"message": message, "extraInfo": {"timestamp": stamp}}}))
    assert root_cause(tmp_path, ["RuntimeError: from the tail"]) == "ValueError: first"
