"""Run and supervise one torchrun: its output to the node's log, a progress line, timeouts, signals.

torchrun starts in its own session, so a terminal's Ctrl-C reaches only the driver, which forwards it
to torchrun (which forwards it to the workers) and waits a grace period before SIGKILL. torchrun puts
each worker in a session of its own too, so the SIGKILL goes to every descendant found under /proc.

No process outlives its config: while a config runs the driver is a child subreaper, so a descendant
orphaned on the way (a daemon that double-forks and calls setsid, a worker whose parent died) becomes
the driver's child instead of init's. When torchrun has ended, every process the config started (the
descendants of torchrun seen during the run, the orphans reparented to the driver, and theirs) gets
SIGTERM, then SIGKILL after a short grace, and the driver reaps them.

Output is read in bounded chunks: a trainer that never prints a newline costs the driver at most a few
hundred KiB, and every byte counts as a sign of life for the stall timeout.
"""

import codecs
import contextlib
import ctypes
import json
import multiprocessing
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
from typing import Protocol, TextIO

from titanbench.clock import utc_now
from titanbench.logparse import iter_windows
from titanbench.plan import ConfigPlan
from titanbench.redact import PrivateRankLogs, private_rank_logs, recover_rank_logs, scrub
from titanbench.spec import flag_value

TAIL_LINES = 30
# One log_tail entry (result.json) holds at most this many characters of a line.
TAIL_CHARS = 1000
# What one read takes from torchrun's pipe, and the longest partial line kept before it is cut.
READ_BYTES = 64 * 1024
LINE_CAP = 64 * 1024
# Text after a cut that is looked at before cutting, so that a secret is never split by the cut.
CUT_MARGIN = 1024
POLL_SECONDS = 0.2
DEFAULT_GRACE_SECONDS = 30.0
# The grace between SIGTERM and SIGKILL for what is left of a config after torchrun has ended.
SWEEP_GRACE_SECONDS = 5.0
# How long the driver waits for SIGKILLed leftovers to go (a process in uninterruptible sleep may not).
SWEEP_KILL_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Limits:
    config_timeout: float | None = None
    stall_timeout: float | None = None
    grace_period: float = DEFAULT_GRACE_SECONDS


# SIGHUP too: a dropped ssh session must stop torchrun, not orphan it on the GPUs.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _die_with_parent() -> None:
    """In torchrun's process, before exec: SIGTERM it when the driver dies, even by SIGKILL or OOM."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_environment(base: Mapping[str, str], plan_env: Mapping[str, str]) -> dict[str, str]:
    """The driver's environment minus PET_* (torchrun reads PET_<OPTION> as option defaults, so an elastic
    PyTorchJob's PET_RDZV_* or PET_MAX_RESTARTS would change the plan's launch), plus the plan's env."""
    return {**{k: v for k, v in base.items() if not k.startswith("PET_")}, **plan_env}


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


class Watch(Protocol):
    """Reads the console log as it comes (each line, scrubbed); a non-empty `stop` ends the config as planned."""

    def feed(self, line: str) -> None: ...

    @property
    def stop(self) -> str: ...


@dataclass
class Outcome:
    """How torchrun ended. status: ok | failed | timeout | stalled | interrupted | stopped (by the watch,
    as planned: whatever torchrun's exit status then)."""

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
        self.noted = False

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

    def note(self, trouble: str) -> None:
        """torchrun's rendezvous trouble, once per config: the nodes may be failing to meet (the log has it all)."""
        if self.noted:
            return
        self.noted = True
        self.stream.write(("\r\x1b[2K" if self.tty else "") + f"{self.prefix}: torchrun reports: {trouble}\n")
        self.stream.flush()

    def finish(self, status: str) -> None:
        self.stream.write(("\r\x1b[2K" if self.tty else "") + f"{self.prefix}: {status}\n")
        self.stream.flush()


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, from /proc/<pid>/stat."""
    stat = _proc_stat(pid)
    return (stat[1], stat[2]) if stat else None


def _processes() -> dict[int, tuple[str, int, int]]:
    """Every process under /proc: pid -> (state, parent pid, start time)."""
    found = {}
    for entry in Path("/proc").iterdir():
        stat = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat:
            found[int(entry.name)] = stat
    return found


def _tree(processes: dict[int, tuple[str, int, int]], roots: list[int]) -> dict[int, int]:
    """The descendants of `roots` in a /proc snapshot: pid -> start time."""
    children: dict[int, list[int]] = {}
    for pid, (_state, parent, _start) in processes.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, int] = {}
    queue = list(roots)
    while queue:
        for child in children.get(queue.pop(0), []):
            if child not in found:
                found[child] = processes[child][2]
                queue.append(child)
    return found


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of `pid` (Linux /proc): pid -> start time, to recognise it later."""
    return _tree(_processes(), [pid])


def _own_children() -> dict[int, int]:
    """The driver's children now: pid -> start time."""
    me = os.getpid()
    return {pid: start for pid, (_state, parent, start) in _processes().items() if parent == me}


# Torchruns running in this driver now (launches are sequential in titanbench; a second one at the same time
# must not be taken for a leftover of the first) and how many launches want the driver as a subreaper.
_ACTIVE: set[int] = set()
_ACTIVE_LOCK = threading.Lock()
_SUBREAPER_USERS = [0, 0]  # [launches inside, the setting before the first]


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """The driver as a child subreaper while the block runs: orphaned descendants become its children."""
    with _ACTIVE_LOCK:
        if _SUBREAPER_USERS[0] == 0:
            previous = ctypes.c_int(0)
            _LIBC.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous))
            _SUBREAPER_USERS[1] = previous.value
            _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        _SUBREAPER_USERS[0] += 1
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _SUBREAPER_USERS[0] -= 1
            if _SUBREAPER_USERS[0] == 0:
                _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, _SUBREAPER_USERS[1])


class _Config:
    """The processes one config started: torchrun's descendants seen while it ran, and the orphans
    reparented to the driver since (its children that are neither torchrun nor older than the launch),
    with their descendants."""

    def __init__(self) -> None:
        # The driver's children before torchrun (a multiprocessing helper, a coordinator): never the config's.
        self.before = _own_children()
        self.torchrun = 0
        self.started = 0  # torchrun's start time, in clock ticks since boot
        self.seen: dict[int, int] = {}
        self.last_look = 0.0

    def begin(self, pid: int) -> None:
        self.torchrun = pid
        stat = _stat(pid)
        self.started = stat[1] if stat else 0
        with _ACTIVE_LOCK:
            _ACTIVE.add(pid)

    def end(self) -> None:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self.torchrun)

    def look(self, every: float = 1.0) -> None:
        """Record torchrun's descendants and reap the config's orphans that have ended (at most once per
        `every` seconds: /proc is read whole)."""
        now = time.monotonic()
        if self.torchrun and now - self.last_look >= every:
            self.last_look = now
            processes = _processes()
            self.seen |= _tree(processes, [self.torchrun])
            _reap(processes, self.members(processes))

    def members(self, processes: dict[int, tuple[str, int, int]]) -> dict[int, int]:
        """The config's processes in a /proc snapshot, zombies included: pid -> start time."""
        me = os.getpid()
        with _ACTIVE_LOCK:
            others = _ACTIVE - {self.torchrun}
        spared = others | {child.pid for child in multiprocessing.active_children()}
        spared |= set(_tree(processes, list(others)))
        orphans = [
            pid
            for pid, (_state, parent, start) in processes.items()
            if parent == me
            and pid != self.torchrun
            and pid not in spared
            and self.before.get(pid) != start
            and start >= self.started
        ]
        # Recorded descendants of torchrun that are still themselves (same start time), wherever they went.
        recorded = [pid for pid, start in self.seen.items() if pid in processes and processes[pid][2] == start]
        found = {pid: processes[pid][2] for pid in (*orphans, *recorded)}
        found |= _tree(processes, list(found))
        for pid in (self.torchrun, me):
            found.pop(pid, None)
        return found

    def sweep(self, grace: float) -> None:
        """SIGTERM whatever the config left, SIGKILL it after `grace`, and reap what became the driver's."""
        terminated: set[tuple[int, int]] = set()
        kill_at: float | None = None
        give_up: float | None = None
        while True:
            processes = _processes()
            members = self.members(processes)
            reaped = _reap(processes, members)
            live = {pid: start for pid, start in members.items() if processes[pid][0] not in "ZX"}
            if not live and not reaped:
                # A reaped process's own zombies pass to the driver: look once more after reaping.
                return
            now = time.monotonic()
            kill_at = kill_at or now + grace
            if now < kill_at:
                fresh = {pid: start for pid, start in live.items() if (pid, start) not in terminated}
                _signal(fresh, signal.SIGTERM)
                terminated |= set(fresh.items())
            else:
                _signal(live, signal.SIGKILL)
                give_up = give_up or now + SWEEP_KILL_WAIT_SECONDS
                if now > give_up:
                    return  # a process stuck in uninterruptible sleep: nothing more a signal can do
            time.sleep(0.05)


def _reap(processes: dict[int, tuple[str, int, int]], members: dict[int, int]) -> int:
    """Wait for the members that are the driver's children and have ended (zombies); how many were reaped."""
    me, reaped = os.getpid(), 0
    for pid in members:
        state, parent, _start = processes[pid]
        if parent == me and state in "ZX":
            with contextlib.suppress(ChildProcessError):
                reaped += os.waitpid(pid, os.WNOHANG)[0] == pid
    return reaped


def _signal(processes: dict[int, int], sig: int) -> None:
    """`sig` to each process that is still the one recorded (same pid AND start time: never a reused pid)."""
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat and stat[1] == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _kill(processes: dict[int, int]) -> None:
    _signal(processes, signal.SIGKILL)


def _tail_entry(line: str) -> str:
    line = line.rstrip("\n")
    return line if len(line) <= TAIL_CHARS else line[: TAIL_CHARS - 3] + "..."


def _cut(text: str, secrets: list[str]) -> int:
    """Where to cut a partial line longer than LINE_CAP: at most LINE_CAP characters in, after the last
    whitespace before it when there is one nearby (a token or URL goes whole to the next piece), and
    never inside a secret. `text` runs at least CUT_MARGIN past LINE_CAP, so a secret that starts
    before the cut is seen whole."""
    cut = LINE_CAP
    space = max(text.rfind(c, LINE_CAP - CUT_MARGIN, LINE_CAP) for c in " \t\r\f\v")
    if space >= 0:
        cut = space + 1
    moved = True
    while moved:
        moved = False
        for secret in secrets:
            at = text.find(secret, max(cut - len(secret) + 1, 0), cut + len(secret) - 1)
            if 0 <= at < cut:
                cut, moved = at, True
    return cut or LINE_CAP


# torchrun's own words when the nodes cannot meet: c10d's socket warnings (an address that does not resolve, a
# refused or timed-out connection) and the rendezvous and store errors it ends with.
_RENDEZVOUS_ERROR = re.compile(
    r"\[c10d\][^\n]*?((?:The (?:client|server) socket|The IPv\d network addresses|Failed to|failed to)[^\n]*)"
    r"|\b((?:torch\.distributed\.\S*)?(?:DistNetworkError|DistStoreError|Rendezvous\w*Error)\b[^\n]*)"
)


def rendezvous_error(line: str) -> str | None:
    """The rendezvous or store trouble a line of torchrun's output reports, in one line (None: none)."""
    match = _RENDEZVOUS_ERROR.search(line)
    return _one_line(match[1] or match[2]) if match else None


class _Reader(threading.Thread):
    """Copies torchrun's output to the log (secrets scrubbed) and tracks the last metrics it saw.

    Reads at most READ_BYTES at a time; a line longer than LINE_CAP is taken in pieces (the log keeps every
    byte, the tail and the metrics see pieces). Any output at all counts as a sign of life. Nothing it
    reads stops it: it must drain the pipe to the end, or torchrun would block on a full pipe."""

    def __init__(
        self, stream, log: TextIO, secrets: list[str], on_metrics, on_rendezvous_error, line_watch: Watch | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.log = log
        self.secrets = [secret for secret in secrets if secret]
        self.margin = max([CUT_MARGIN, *(len(secret) for secret in self.secrets)])
        self.on_metrics = on_metrics
        self.on_rendezvous_error = on_rendezvous_error
        self.line_watch = line_watch
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.last_output = time.monotonic()
        self.last_step: int | None = None
        self.last_tps: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        fd = self.stream.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            try:
                chunk = os.read(fd, READ_BYTES)
            except OSError as exc:
                self._note(exc)
                break
            if not chunk:
                break
            self.last_output = time.monotonic()
            try:
                *lines, pending = (pending + decoder.decode(chunk)).split("\n")
                pieces = [line + "\n" for line in lines]
                while len(pending) >= LINE_CAP + self.margin:
                    cut = _cut(pending, self.secrets)
                    pieces.append(pending[:cut])
                    pending = pending[cut:]
                self._emit(pieces)
            except Exception as exc:  # whatever the trainer prints, the pipe is drained to its end
                self._note(exc)
        with contextlib.suppress(Exception):
            self._emit([pending + decoder.decode(b"", final=True)])
        if self.error:
            with contextlib.suppress(Exception):
                self.log.write(f"\n[titanbench] reading torchrun's output: {self.error}\n")
                self.log.flush()

    def _emit(self, pieces: list[str]) -> None:
        """Scrub each complete line (or cut piece), append it to the log, the tail and the metrics."""
        pieces = [scrub(piece, self.secrets) for piece in pieces if piece]
        if not pieces:
            return
        try:
            self.log.write("".join(pieces))
            self.log.flush()
        except (OSError, ValueError) as exc:
            self._note(exc)
        for piece in pieces:
            self.tail.append(_tail_entry(piece))
            trouble = rendezvous_error(piece)
            if trouble:
                self.on_rendezvous_error(trouble)
            if self.line_watch is not None:
                self.line_watch.feed(piece)
            windows = iter_windows(piece)
            if windows:
                self.last_step, self.last_tps = windows[-1].step, windows[-1].tps
                self.on_metrics(self.last_step, self.last_tps)

    def _note(self, exc: BaseException) -> None:
        self.error = self.error or f"{type(exc).__name__}: {exc}"


def launcher_command(plan: ConfigPlan, log_dir: Path | None = None) -> list[str]:
    """The plan's torchrun argv, run as `python -m torch.distributed.run` of the driver's own interpreter,
    with torchrun's `--log-dir` moved to `log_dir` if given."""
    argv = [str(log_dir) if log_dir and before == "--log-dir" else arg for before, arg in _pairs(plan.launcher_argv)]
    if argv[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    return argv


def _pairs(argv: list[str]) -> list[tuple[str, str]]:
    return list(zip(["", *argv], argv, strict=False))


def _rank_logs(plan: ConfigPlan, secrets: list[str]) -> contextlib.AbstractContextManager[PrivateRankLogs | None]:
    """torchrun's rank logs go to a private directory; scrubbed copies reach the results tree after."""
    if not plan.rank_log_dir:
        return contextlib.nullcontext()
    dump_folder = flag_value(plan.torchtitan_args, "--job.dump_folder")
    return private_rank_logs(Path(plan.rank_log_dir), Path(dump_folder) if dump_folder else None, secrets)


def launch(
    plan: ConfigPlan,
    log_file: Path,
    limits: Limits,
    stop: Stop,
    progress: Progress,
    *,
    secrets: list[str],
    environ: Mapping[str, str] | None = None,
    on_stop: Callable[[int], None] | None = None,
    watch: Callable[[], str | None] | None = None,
    line_watch: Watch | None = None,
) -> Outcome:
    """Run one config's torchrun to the end (or until a limit, a signal, `watch` or `line_watch` stops it).

    `on_stop(signal)` runs once when a signal is first seen, before torchrun's grace period: a
    scheduler's SIGKILL (Slurm's KillWait, Kubernetes' terminationGracePeriodSeconds) may come first.
    `watch()`, asked every poll, says why the config must stop now (another node is lost), or None.
    `line_watch` sees every line of the log; once its `stop` says why, torchrun is stopped as planned
    (`stopped`, e.g. --until-stable).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    for directory in plan.make_dirs:
        Path(directory).mkdir(parents=True, exist_ok=True)
    env = _child_environment(os.environ if environ is None else environ, plan.env)
    recover_rank_logs(secrets)
    started_at, started = utc_now(), time.monotonic()
    with _rank_logs(plan, secrets) as private, open(log_file, "w", encoding="utf-8") as log, _subreaper():
        config = _Config()
        proc = subprocess.Popen(
            launcher_command(plan, private.logs if private else None),
            # torchrun holds the private directory's lock too: it stays taken until torchrun is gone.
            pass_fds=(private.lock_fd,) if private else (),
            cwd=plan.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        config.begin(proc.pid)
        try:
            reader = _Reader(proc.stdout, log, secrets, progress.update, progress.note, line_watch)
            reader.start()
            progress.update(None, None)
            status, reason = _supervise(proc, reader, limits, stop, started, on_stop, config, watch, line_watch)
        finally:
            if proc.poll() is None:  # an exception in the driver: torchrun goes with the config
                _terminate(proc, signal.SIGKILL, 0, config)
            # Nothing the config started outlives it (and the pipe's last writers are gone with it).
            config.sweep(min(limits.grace_period, SWEEP_GRACE_SECONDS))
            config.end()
        reader.join(timeout=5)
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
    config: _Config,
    watch: Callable[[], str | None] | None,
    line_watch: Watch | None = None,
) -> tuple[str, str]:
    while proc.poll() is None:
        config.look()
        now = time.monotonic()
        lost = watch() if watch is not None else None
        if lost:
            _terminate(proc, signal.SIGTERM, limits.grace_period, config)
            return "interrupted", lost
        if stop.signal:
            sig = signal.Signals(stop.signal)
            if on_stop is not None:
                on_stop(sig)
            _terminate(proc, sig, limits.grace_period, config)
            return "interrupted", f"the driver received {sig.name}; forwarded to torchrun"
        if line_watch is not None and line_watch.stop:
            _terminate(proc, signal.SIGTERM, limits.grace_period, config)
            return "stopped", line_watch.stop
        if limits.config_timeout and now - started > limits.config_timeout:
            _terminate(proc, signal.SIGTERM, limits.grace_period, config)
            return "timeout", f"still running after --config-timeout {limits.config_timeout:g} s"
        if limits.stall_timeout and now - reader.last_output > limits.stall_timeout:
            _terminate(proc, signal.SIGTERM, limits.grace_period, config)
            return "stalled", f"no output for --stall-timeout {limits.stall_timeout:g} s"
        time.sleep(POLL_SECONDS)
    return "ok", ""


def _terminate(proc: subprocess.Popen, sig: int, grace: float, config: _Config) -> None:
    """`sig` to torchrun's process group (torchrun passes it on to the workers), SIGKILL to all after `grace`."""
    config.look(every=0)
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        config.look(every=POLL_SECONDS)
        time.sleep(POLL_SECONDS)
    if proc.poll() is None:
        config.look(every=0)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Workers live in sessions of their own: none may outlive torchrun.
    _kill(config.seen)
