"""Supervising one launch: real child processes stand in for torchrun (fast, no torch)."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from logfactory import Metrics, metrics_message, titan_line
from titanbench.launch import Limits, Progress, Stop, launch, launcher_command, root_cause
from titanbench.plan import ConfigPlan
from titanbench.spec import Topology

METRICS = titan_line(metrics_message(Metrics(step=10, tps=6567)))


def plan_running(code: str, tmp_path: Path, steps: int = 20) -> ConfigPlan:
    return ConfigPlan(
        model="m",
        config="c",
        tp_type="vanilla",
        quantization="bf16",
        steps=steps,
        topology=Topology(nodes=1, gpus_per_node=1, tp=1, fsdp=1),
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
    return run_plan(plan_running(code, tmp_path), tmp_path, limits, stop, **kwargs)


def run_plan(plan: ConfigPlan, tmp_path: Path, limits: Limits = NO_LIMITS, stop: Stop | None = None, **kwargs):
    log = tmp_path / "m" / "c" / "train.log"
    out = io.StringIO()
    outcome = launch(
        plan,
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


class StopAtLineWatch:
    """Test double for a watch (`stable.UntilStable` in a run): asks to stop once it has seen `line`."""

    def __init__(self, line: str) -> None:
        self.line = line
        self.seen: list[str] = []

    def feed(self, line: str) -> None:
        self.seen.append(line)

    @property
    def stop(self) -> str:
        return "stable enough" if any(self.line in seen for seen in self.seen) else ""


def test_a_line_watch_that_asks_to_stop_ends_the_config_as_stopped_whatever_the_exit_status(tmp_path):
    code = """
        import itertools, time
        for n in itertools.count():
            print("line", n, flush=True)
            time.sleep(0.05)
    """
    watch = StopAtLineWatch("line 3")
    outcome, log, _ = run(code, tmp_path, Limits(config_timeout=60, grace_period=5), line_watch=watch)
    assert (outcome.status, outcome.reason) == ("stopped", "stable enough")
    assert outcome.returncode == -signal.SIGTERM
    # Every line reached the watch, in order, as the log has it.
    assert watch.seen[:4] == ["line 0\n", "line 1\n", "line 2\n", "line 3\n"]
    assert "".join(watch.seen) == log
    # A watch that never asks changes nothing.
    outcome, _, _ = run("print('line 0')", tmp_path, line_watch=StopAtLineWatch("line 3"))
    assert (outcome.status, outcome.returncode) == ("ok", 0)


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


SECRET = "hf_rankSecret42"
# A fake torchrun: it writes its rank log where `--log-dir` says, and a trace into the dump folder.
LEAKING_TORCHRUN = textwrap.dedent(f"""
    import os, pathlib, sys
    log_dir = pathlib.Path(sys.argv[sys.argv.index("--log-dir") + 1])
    rank = log_dir / "run_x" / "attempt_0" / "1"
    rank.mkdir(parents=True)
    (rank / "stdout.log").write_text("token {SECRET} seen\\n")
    (rank / "stderr.log").write_text("nothing to hide\\n")
    dump = pathlib.Path(sys.argv[sys.argv.index("--dump") + 1])
    dump.mkdir(parents=True)
    (dump / "trace.json").write_text('{{"args": "{SECRET}"}}')
    (dump / "events.bin").write_bytes(b"\\xff\\x00{SECRET}\\xfe")
    print("log-dir", log_dir, oct(os.stat(log_dir.parent).st_mode & 0o777), flush=True)
""")


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """The private rank-log directory under this test's own temp dir (subprocess drivers too)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def plan_with_rank_logs(code: str, tmp_path: Path) -> ConfigPlan:
    """A config whose results folder is tmp_path/results/m/c, launched with torchrun's --log-dir."""
    plan = plan_running(code, tmp_path)
    folder = tmp_path / "results" / "m" / "c"
    plan.rank_log_dir = str(folder / "ranks" / "node0")
    plan.launcher_argv += ["--log-dir", plan.rank_log_dir, "--dump", str(folder / "outputs")]
    plan.torchtitan_args = [f"--job.dump_folder={folder / 'outputs'}"]
    return plan


def secrets_under(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_rank_logs_are_written_privately_and_reach_the_results_tree_only_scrubbed(tmp_path, private_tmp):
    outcome, log, _ = run_plan(plan_with_rank_logs(LEAKING_TORCHRUN, tmp_path), tmp_path, secrets=[SECRET])
    assert outcome.status == "ok", log
    folder = tmp_path / "results" / "m" / "c"
    _, log_dir, mode = next(line for line in log.splitlines() if line.startswith("log-dir")).split()
    assert Path(log_dir).is_relative_to(private_tmp) and mode == "0o700"
    assert not Path(log_dir).exists(), "the private copy is removed once delivered"
    ranks = folder / "ranks" / "node0" / "run_x" / "attempt_0" / "1"
    assert (ranks / "stdout.log").read_text() == "token *** seen\n"
    assert (ranks / "stderr.log").read_text() == "nothing to hide\n"
    assert (folder / "outputs" / "trace.json").read_text() == '{"args": "***"}'
    # Bytes that are not text stay as they were around the mask.
    assert (folder / "outputs" / "events.bin").read_bytes() == b"\xff\x00***\xfe"
    assert secrets_under(tmp_path) == []


def test_a_driver_killed_mid_config_leaves_no_rank_log_in_clear_and_the_next_launch_delivers_it(tmp_path):
    """Planted: the driver is SIGKILLed while its torchrun has written a secret into a rank log."""
    child_pid = tmp_path / "child.pid"
    code = (
        LEAKING_TORCHRUN
        + f"import time; pathlib.Path({str(child_pid)!r}).write_text(str(os.getpid())); time.sleep(600)"
    )
    driver = textwrap.dedent(f"""
        import io, sys, pathlib
        sys.path[:0] = {sys.path!r}
        from test_launch import plan_with_rank_logs, NO_LIMITS, SECRET
        from titanbench.launch import Progress, Stop, launch
        tmp = pathlib.Path({str(tmp_path)!r})
        launch(plan_with_rank_logs({code!r}, tmp), tmp / "train.log",
               NO_LIMITS, Stop(), Progress(io.StringIO(), 1, 1, "m/c", 20), secrets=[SECRET])
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver])
    deadline = time.monotonic() + 60
    while not (child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(child_pid.read_text())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    results = tmp_path / "results"
    assert secrets_under(results / "m" / "c" / "ranks") == []

    # The next launch (any config) scrubs what the dead driver left and removes its private copy.
    outcome, _, _ = run_plan(plan_running("print('next')", tmp_path), tmp_path, secrets=[SECRET])
    assert outcome.status == "ok"
    assert (results / "m" / "c" / "ranks" / "node0" / "run_x" / "attempt_0" / "1" / "stdout.log").read_text() == (
        "token *** seen\n"
    )
    assert secrets_under(results) == []
    assert list((tmp_path / "tmp" / f"titanbench-{os.getuid()}").iterdir()) == []


def test_leftovers_of_a_running_torchrun_are_not_taken(tmp_path, private_tmp):
    """A private directory whose torchrun still holds the lock belongs to a live launch."""
    from titanbench.redact import private_rank_logs, recover_rank_logs

    ranks = tmp_path / "results" / "m" / "c" / "ranks" / "node0"
    ranks.parent.mkdir(parents=True)
    with private_rank_logs(ranks, None, [SECRET]) as private:
        (private.logs / "0.log").write_text(f"{SECRET}\n")
        recover_rank_logs([SECRET])
        assert (private.logs / "0.log").exists() and not ranks.exists()
    assert (ranks / "0.log").read_text() == "***\n"


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


# --- No process outlives its config (planted faults: a SIGTERM-proof child, a detached grandchild) ---

# The stand-in trainer: a child that ignores SIGTERM, and a grandchild that calls setsid and whose parent
# exits at once (a daemon: orphaned while the trainer still runs). Each writes its pid to `pids/`.
LEAVES_PROCESSES_BEHIND = """
    import os, pathlib, subprocess, sys, time
    pids = pathlib.Path({pids!r})
    pids.mkdir()
    stubborn = (
        "import os, pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path({pids!r}, 'stubborn').write_text(str(os.getpid())); time.sleep(600)"
    )
    detached = (
        "import os, pathlib, time; os.setsid(); "
        "pathlib.Path({pids!r}, 'detached').write_text(str(os.getpid())); time.sleep(600)"
    )
    daemonize = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {{detached!r}}])"
    subprocess.Popen([sys.executable, "-c", stubborn])
    subprocess.Popen([sys.executable, "-c", daemonize]).wait()
    while not all((pids / name).is_file() and (pids / name).read_text() for name in ("stubborn", "detached")):
        time.sleep(0.05)
    print("left behind", flush=True)
    {then}
"""


def zombie_children() -> list[int]:
    """This process's children that exited and were never reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        with_stat = entry.name.isdigit() and Path(entry, "stat").exists()
        try:
            fields = Path(entry, "stat").read_text().rsplit(")", 1)[1].split() if with_stat else []
        except OSError:
            continue
        if fields and int(fields[1]) == os.getpid() and fields[0] == "Z":
            found.append(int(entry.name))
    return found


def left_behind(pids: Path) -> list[int]:
    return [pid for pid in (int((pids / name).read_text()) for name in ("stubborn", "detached")) if alive(pid)]


ENDINGS = {
    # status: (what the stand-in does once its processes are out, the limits, a driver signal)
    "ok": ("", Limits(grace_period=1), False),
    "failed": ("sys.exit(7)", Limits(grace_period=1), False),
    "timeout": ("time.sleep(600)", Limits(config_timeout=5, grace_period=1), False),
    "stalled": ("time.sleep(600)", Limits(stall_timeout=3, grace_period=1), False),
    "interrupted": ("time.sleep(600)", Limits(grace_period=1), True),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_nothing_the_config_started_outlives_it(tmp_path, ending):
    then, limits, interrupt = ENDINGS[ending]
    pids = tmp_path / "pids"
    stop = Stop()
    if interrupt:

        def interrupt_when_started():
            while not (pids / "detached").is_file():
                time.sleep(0.05)
            stop.signal = signal.SIGTERM

        threading.Thread(target=interrupt_when_started, daemon=True).start()
    # A helper the driver owns, started before the config: not the config's, so it must survive.
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        code = LEAVES_PROCESSES_BEHIND.format(pids=str(pids), then=then)
        outcome, text, _ = run(code, tmp_path, limits, stop=stop)
        assert outcome.status == ending, outcome
        assert "left behind" in text
        assert left_behind(pids) == []
        assert zombie_children() == []
        assert alive(helper.pid), "the driver's own helper was killed"
    finally:
        helper.kill()
        helper.wait()


# --- Bounded output (planted faults: 100 MB without a newline, a secret split across writes) ---


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM) so far."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_100_mb_without_a_newline_is_progress_in_bounded_memory(tmp_path):
    # 100 writes of 1 MiB over ~6 s, no newline: longer than the stall timeout, and no line ever ends.
    code = """
        import sys, time
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            time.sleep(0.06)
    """
    log = tmp_path / "train.log"
    limits = Limits(stall_timeout=3, grace_period=1)
    before = peak_rss_bytes()
    outcome = launch(
        plan_running(code, tmp_path), log, limits, Stop(), Progress(io.StringIO(), 1, 1, "m/c", 20), secrets=[]
    )
    growth = peak_rss_bytes() - before
    assert outcome.status == "ok", outcome
    assert growth < 200 * 2**20, f"the driver grew by {growth / 2**20:.0f} MiB"
    assert 0 < len(outcome.log_tail) <= 30
    assert all(len(entry) <= 1000 for entry in outcome.log_tail)
    assert len(json.dumps(outcome.to_dict())) < 64 * 1024
    assert log.stat().st_size == 100 * 2**20
    with open(log, "rb") as written:
        assert all(set(block) == {ord("x")} for block in iter(lambda: written.read(1 << 20), b""))


def test_output_without_newlines_counts_as_progress(tmp_path):
    code = """
        import sys, time
        for _ in range(8):
            sys.stdout.write("."); sys.stdout.flush()
            time.sleep(0.75)
    """
    # Dots for 6 s, twice the stall timeout (which leaves a loaded machine 3 s to start the process).
    outcome, log, _ = run(code, tmp_path, Limits(stall_timeout=3, grace_period=1))
    assert outcome.status == "ok", outcome
    assert log == "." * 8


def test_undecodable_bytes_do_not_stop_the_reader(tmp_path):
    code = f"""
        import sys
        sys.stdout.buffer.write(b"\\xff\\xfe\\x80 garbage\\n" + b"\\xc3" )
        sys.stdout.buffer.flush()
        sys.stdout.buffer.write(b"\\xa9t\\xe9\\n")
        print({METRICS!r})
    """
    outcome, log, _ = run(code, tmp_path)
    assert outcome.status == "ok"
    assert "\ufffd\ufffd\ufffd garbage\n" in log
    assert "\u00e9t\ufffd\n" in log  # a character split across two writes is decoded whole
    assert (outcome.last_step, outcome.last_tps) == (10, 6567)


def test_a_secret_split_across_two_writes_is_masked(tmp_path):
    secret = "s3cr3t-value-split-in-two-halves"
    code = f"""
        import sys, time
        sys.stdout.write("token is {secret[:12]}"); sys.stdout.flush()
        time.sleep(0.5)
        sys.stdout.write("{secret[12:]} and more\\n"); sys.stdout.flush()
    """
    outcome, log, _ = run(code, tmp_path, secrets=[secret])
    assert outcome.status == "ok"
    assert log == "token is *** and more\n"
    assert secret[:12] not in log and secret[12:] not in log


def test_a_secret_across_the_line_cap_is_masked(tmp_path):
    # A line too long to keep whole is cut: never inside a secret, and each piece is scrubbed.
    secret = "s3cr3t-value-at-the-cap"
    code = f"""
        import sys, time
        for offset in range(-30, 30, 7):
            head = "x" * ((1 << 16) + offset) + "{secret[:9]}"
            sys.stdout.write(head); sys.stdout.flush()
            time.sleep(0.05)
            sys.stdout.write("{secret[9:]}" + "y" * (1 << 16)); sys.stdout.flush()
        sys.stdout.write("\\n")
    """
    outcome, log, _ = run(code, tmp_path, secrets=[secret])
    assert outcome.status == "ok"
    assert secret[:9] not in log and secret[9:] not in log
    assert log.count("***") == len(range(-30, 30, 7))
    assert all(secret[:9] not in entry and secret[9:] not in entry for entry in outcome.log_tail)


def test_torchruns_rendezvous_trouble_reaches_the_console_once(tmp_path):
    code = """
        import time
        for _ in range(3):
            print("[W1201 04:59:39.936090088 socket.cpp:764] [c10d] The IPv6 network addresses of "
                  "(node0.example, 29500) cannot be retrieved (gai error: -2 - Name or service not known).")
        time.sleep(0.5)
    """
    outcome, log, progress = run(code, tmp_path)
    assert outcome.status == "ok" and log.count("cannot be retrieved") == 3
    assert progress.count("torchrun reports:") == 1
    assert (
        "m/c: torchrun reports: The IPv6 network addresses of (node0.example, 29500) cannot be retrieved "
        "(gai error: -2 - Name or service not known)." in progress
    )


def test_a_watch_that_reports_a_lost_node_stops_the_config(tmp_path):
    started = time.monotonic()
    outcome, _, _ = run("import time; time.sleep(60)", tmp_path, watch=lambda: "node 1 lost: silent")
    assert (outcome.status, outcome.reason) == ("interrupted", "node 1 lost: silent")
    assert time.monotonic() - started < 30
