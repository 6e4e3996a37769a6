"""Run and supervise one torchrun: its output to the node's log, a progress line, timeouts, signals.

torchrun starts in its own session, so a terminal's Ctrl-C reaches only the driver, which forwards it
to torchrun (which forwards it to the workers) and waits a grace period before SIGKILL. torchrun puts
each worker in a session of its own too, so the SIGKILL goes to every descendant found under /proc.
"""

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from titanbench.atomic import write_text
from titanbench.clock import utc_now
from titanbench.logparse import iter_windows
from titanbench.plan import ConfigPlan
from titanbench.redact import scrub

TAIL_LINES = 30
POLL_SECONDS = 0.2
DEFAULT_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Limits:
    config_timeout: float | None = None
    stall_timeout: float | None = None
    grace_period: float = DEFAULT_GRACE_SECONDS


# SIGHUP too: a dropped ssh session must stop torchrun, not orphan it on the GPUs.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In torchrun's process, before exec: SIGTERM it when the driver dies, even by SIGKILL or OOM."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_environment(base: Mapping[str, str], plan_env: Mapping[str, str]) -> dict[str, str]:
    """The driver's environment minus PET_* (torchrun reads PET_<OPTION> as option defaults, so an elastic
    PyTorchJob's PET_RDZV_* or PET_MAX_RESTARTS would change the plan's launch), plus the plan's env."""
    return {**{k: v for k, v in base.items() if not k.startswith("PET_")}, **plan_env}


def scrub_tree(root: Path, secrets: list[str]) -> None:
    """Rewrite any file under root that holds a secret, with the secret masked (torchrun's per-rank files)."""
    if not secrets or not root.is_dir():
        return
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if any(secret in text for secret in secrets):
                write_text(path, scrub(text, secrets))


class Stop:
    """The first SIGINT/SIGTERM/SIGHUP the driver received (0: none yet)."""

    def __init__(self) -> None:
        self.signal = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator["Stop"]:
        """Catch SIGINT/SIGTERM/SIGHUP while the block runs; the previous handlers come back after."""
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal = self.signal or signum


@dataclass
class Outcome:
    """How torchrun ended. status: ok | failed | timeout | stalled | interrupted."""

    status: str
    returncode: int | None
    reason: str
    started_at: str
    finished_at: str
    duration_s: float
    last_step: int | None
    last_tps: float | None
    log_tail: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """`[i/N] model/config  step s/steps  tps X  elapsed  ETA`: in place on a TTY, else a line per metric."""

    def __init__(self, stream: TextIO, index: int, total: int, label: str, steps: int) -> None:
        self.stream = stream
        self.prefix = f"[{index}/{total}] {label}"
        self.steps = steps
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.first: tuple[int, float] | None = None

    def line(self, step: int | None, tps: float | None) -> str:
        now = time.monotonic()
        parts = [self.prefix, f"step {step or 0}/{self.steps}"]
        if tps is not None:
            parts.append(f"tps {tps:,.0f}")
        parts.append(f"elapsed {_clock(now - self.started)}")
        if step and self.first is not None and step > self.first[0]:
            # The rate since the first metrics line: start-up and compile are behind it.
            first_step, first_at = self.first
            parts.append(f"ETA {_clock((now - first_at) / (step - first_step) * max(self.steps - step, 0))}")
        return "  ".join(parts)

    def update(self, step: int | None, tps: float | None) -> None:
        if step and self.first is None:
            self.first = (step, time.monotonic())
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line(step, tps))
        else:
            self.stream.write(self.line(step, tps) + "\n")
        self.stream.flush()

    def finish(self, status: str) -> None:
        self.stream.write(("\r\x1b[2K" if self.tty else "") + f"{self.prefix}: {status}\n")
        self.stream.flush()


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of `pid` (Linux /proc): pid -> start time, to recognise it later."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        stat = _stat(int(entry.name)) if entry.name.isdigit() else None
        if stat:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found: dict[int, int] = {}
    queue = [pid]
    while queue:
        for child, start in children.get(queue.pop(0), []):
            found[child] = start
            queue.append(child)
    return found


def _kill(processes: dict[int, int]) -> None:
    """SIGKILL each process that is still the one recorded (same pid AND start time: never a reused pid)."""
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat and stat[1] == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class _Reader(threading.Thread):
    """Copies torchrun's output to the log (secrets scrubbed) and tracks the last metrics it saw."""

    def __init__(self, stream, log: TextIO, secrets: list[str], on_metrics) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.log = log
        self.secrets = secrets
        self.on_metrics = on_metrics
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.last_output = time.monotonic()
        self.last_step: int | None = None
        self.last_tps: float | None = None

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            self.last_output = time.monotonic()
            line = scrub(raw.decode("utf-8", errors="replace"), self.secrets)
            self.log.write(line)
            self.log.flush()
            self.tail.append(line.rstrip("\n"))
            windows = iter_windows(line)
            if windows:
                self.last_step, self.last_tps = windows[-1].step, windows[-1].tps
                self.on_metrics(self.last_step, self.last_tps)


def launcher_command(plan: ConfigPlan) -> list[str]:
    """The plan's torchrun argv, run as `python -m torch.distributed.run` of the driver's own interpreter."""
    argv = plan.launcher_argv
    if argv[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    return list(argv)


def launch(
    plan: ConfigPlan,
    log_file: Path,
    limits: Limits,
    stop: Stop,
    progress: Progress,
    *,
    secrets: list[str],
    environ: dict[str, str] | None = None,
    on_stop: Callable[[int], None] | None = None,
) -> Outcome:
    """Run one config's torchrun to the end (or until a limit or a signal stops it).

    `on_stop(signal)` runs once when a signal is first seen, before torchrun's grace period: a
    scheduler's SIGKILL (Slurm's KillWait, Kubernetes' terminationGracePeriodSeconds) may come first.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    for directory in plan.make_dirs:
        Path(directory).mkdir(parents=True, exist_ok=True)
    env = _child_environment(os.environ if environ is None else environ, plan.env)
    started_at, started = utc_now(), time.monotonic()
    with open(log_file, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            launcher_command(plan),
            cwd=plan.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        reader = _Reader(proc.stdout, log, secrets, progress.update)
        reader.start()
        progress.update(None, None)
        status, reason = _supervise(proc, reader, limits, stop, started, on_stop)
        reader.join(timeout=5)
    if plan.rank_log_dir:
        scrub_tree(Path(plan.rank_log_dir), secrets)
    returncode = proc.returncode
    if status == "ok" and returncode != 0:
        status = "failed"
        cause = root_cause(Path(plan.rank_log_dir) if plan.rank_log_dir else None, list(reader.tail))
        reason = _exit_reason(returncode) + (f": {cause}" if cause else "")
    return Outcome(
        status=status,
        returncode=returncode,
        reason=reason,
        started_at=started_at,
        finished_at=utc_now(),
        duration_s=round(time.monotonic() - started, 3),
        last_step=reader.last_step,
        last_tps=reader.last_tps,
        log_tail=list(reader.tail),
    )


# The last line of a Python traceback: `SomeError: message` (behind torchrun's `[rankN]:` prefix).
_EXCEPTION_LINE = re.compile(
    r"^(?:\[\w+\]:)*\s*((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Failed|Failure|Interrupt)\b.*)$"
)
CAUSE_CHARS = 300


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= CAUSE_CHARS else line[: CAUSE_CHARS - 3] + "..."


def root_cause(rank_log_dir: Path | None, log_tail: list[str]) -> str | None:
    """Why the trainer failed: the first error torchrun's workers recorded (`error.json`, written by
    torchelastic's `@record`, which torchtitan's trainer uses), else the last exception line in the log."""
    recorded = []
    for path in sorted(rank_log_dir.rglob("error.json")) if rank_log_dir and rank_log_dir.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            message = json.loads(path.read_text())["message"]
            text = message["message"] if isinstance(message, dict) else message
            stamp = message.get("extraInfo", {}).get("timestamp", "") if isinstance(message, dict) else ""
            recorded.append((str(stamp), str(text)))
    if recorded:
        return _one_line(min(recorded)[1].strip().splitlines()[0])
    for line in reversed(log_tail):
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            return _one_line(match[1])
    return None


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"torchrun was killed by {signal.Signals(-returncode).name}"
    return f"torchrun exited with status {returncode}"


def _supervise(
    proc: subprocess.Popen,
    reader: _Reader,
    limits: Limits,
    stop: Stop,
    started: float,
    on_stop: Callable[[int], None] | None,
) -> tuple[str, str]:
    while proc.poll() is None:
        now = time.monotonic()
        if stop.signal:
            sig = signal.Signals(stop.signal)
            if on_stop is not None:
                on_stop(sig)
            _terminate(proc, sig, limits.grace_period)
            return "interrupted", f"the driver received {sig.name}; forwarded to torchrun"
        if limits.config_timeout and now - started > limits.config_timeout:
            _terminate(proc, signal.SIGTERM, limits.grace_period)
            return "timeout", f"still running after --config-timeout {limits.config_timeout:g} s"
        if limits.stall_timeout and now - reader.last_output > limits.stall_timeout:
            _terminate(proc, signal.SIGTERM, limits.grace_period)
            return "stalled", f"no output for --stall-timeout {limits.stall_timeout:g} s"
        time.sleep(POLL_SECONDS)
    return "ok", ""


def _terminate(proc: subprocess.Popen, sig: int, grace: float) -> None:
    """`sig` to torchrun's process group (torchrun passes it on to the workers), SIGKILL to all after `grace`."""
    tree = descendants(proc.pid)
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        tree |= descendants(proc.pid)
        time.sleep(POLL_SECONDS)
    if proc.poll() is None:
        tree |= descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Workers live in sessions of their own: none may outlive torchrun.
    _kill(tree)
