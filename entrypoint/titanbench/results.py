"""The results layout, shared by `run` (writer) and `report` (reader).

    RUN_DIR/run.json                       the plan, topology, environment, timings (optional)
    RUN_DIR/<model>/<config>/train.log     node 0's console log (rank 0): the numbers come from here
    RUN_DIR/<model>/<config>/node<R>.log   other nodes' logs
    RUN_DIR/<model>/<config>/result.json   status of that config (optional: logs alone are enough)
    RUN_DIR/results.json, RESULTS.md, RESULTS.png   written by the report

A config run several times (`run --repeat N`, N > 1) keeps one log per trial, `train.trial<K>.log` and
`node<R>.trial<K>.log` (K = 1..N), and one result.json whose `trials` list holds each trial's record;
with N = 1 the layout is the one above.

Every JSON file is written atomically; a finished `ok` result is never overwritten, and a trial that
finished `ok` is never dropped from its config's result.json (nor its log renamed: it is never rerun).
"""

import fcntl
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from titanbench.atomic import write_json
from titanbench.clock import utc_now
from titanbench.errors import TitanbenchError
from titanbench.nodes import Placement
from titanbench.options import RunOptions
from titanbench.spec import Topology, describe_error

RUN_FILE = "run.json"
# Held (flock) by the driver that owns the run directory; see hold_run_dir.
LOCK_FILE = ".lock"
RESULT_FILE = "result.json"
TRAIN_LOG = "train.log"
# ok; skipped (cannot run on this device: never launched, never a failure); and the ways a config fails.
Status = Literal[
    "ok",
    "skipped",
    "failed",
    "timeout",
    "stalled",
    "interrupted",
    "incomplete",
    "no-data",
    "invalid",
    "unverified",
]
STATUSES: tuple[Status, ...] = get_args(Status)
# run.json's own status: the matrix is going, stopped before its end, or went through every config.
RunStatus = Literal["running", "interrupted", "finished"]


def config_dir(run_dir: Path, model: str, config: str) -> Path:
    return run_dir / model / config


def log_path(run_dir: Path, model: str, config: str, node_rank: int = 0, trial: int | None = None) -> Path:
    """A node's log of a config; of one trial when the config runs several times (`trial` from 1)."""
    stem = "train" if node_rank == 0 else f"node{node_rank}"
    name = f"{stem}.log" if trial is None else f"{stem}.trial{trial}.log"
    return config_dir(run_dir, model, config) / name


_TRIAL_LOG = re.compile(r"train\.trial([1-9]\d*)\.log")


def trial_logs(run_dir: Path, model: str, config: str) -> dict[int, Path]:
    """Node 0's per-trial logs of a config present on disk, by trial number (empty for a single-run config)."""
    folder = config_dir(run_dir, model, config)
    found = {int(m[1]): path for path in folder.glob("train.trial*.log") if (m := _TRIAL_LOG.fullmatch(path.name))}
    return dict(sorted(found.items()))


class _Record(BaseModel):
    # Fields a reader relies on are typed; anything else a writer adds passes through.
    model_config = ConfigDict(extra="allow")


class RecordedPlan(_Record):
    """A `ConfigPlan.to_dict()` as run.json keeps it (its environment redacted)."""

    model: str
    config: str
    tp_type: str | None = None
    quantization: str | None = None
    topology: Topology | None = None
    published_tps: float | None = None
    # None: the plan was recorded without them (written by something else than titanbench's runner).
    deviations: list[str] | None = None
    trainer: str | None = None
    device: str | None = None


class Timing(_Record):
    """run.json's `timings` entry of a config: its last attempt."""

    status: Status
    attempt: int = Field(ge=0)
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None


class Session(_Record):
    """One driver's go at the run (the first, then one per `--resume`)."""

    started_at: str
    node_rank: int = 0
    finished_at: str | None = None
    # Why the matrix ended before its last config.
    stopped: str | None = None


class _Recorded(BaseModel):
    """A part of the manifest as run.json keeps it: what readers rely on is typed, the rest passes through
    (manifests of other titanbench versions and hand-written ones still read)."""

    model_config = ConfigDict(extra="allow")


class RecordedGpu(_Recorded):
    name: str | None = None
    memory_total_mib: int | None = None
    power_limit_w: float | None = None


class RecordedGpuFacts(_Recorded):
    gpus: list[RecordedGpu] = []
    # nvlink[i][j]: GPUs i and j talk over NVLink (None where unknown), as gpuinfo.GpuFacts has it.
    nvlink: list[list[bool | None]] = []


class RecordedRdmaPort(_Recorded):
    state: str | None = None
    rate: str | None = None


class RecordedPin(_Recorded):
    """One component of `pin_report`: what is pinned (by git version, commit or release) and installed."""

    expected_git_version: str | None = None
    expected_commit: str | None = None
    expected: str | None = None
    git_version: str | None = None
    commit: str | None = None
    version: str | None = None
    match: bool | None = None

    def pinned(self) -> str | None:
        return self.expected_git_version or self.expected_commit or self.expected

    def installed(self) -> str | None:
        return self.git_version or self.commit or self.version


class RecordedPins(_Recorded):
    mode: str | None = None
    torch: RecordedPin | None = None
    torchao: RecordedPin | None = None
    torchtitan: RecordedPin | None = None


class Manifest(_Recorded):
    """The environment manifest run.json records (`envinfo.manifest()`, as `titanbench env --json` prints it)."""

    gpu: RecordedGpuFacts | None = None
    rdma: list[RecordedRdmaPort] | None = None
    pins: RecordedPins | None = None
    env: dict[str, str] = {}
    unavailable: dict[str, str] = {}


class RunRecord(_Record):
    """run.json: written by node 0's driver, read by `--resume` and by the report."""

    titanbench_version: str | None = None
    run_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    status: RunStatus | None = None
    request: RunOptions | None = None
    fingerprint: str | None = None
    # Where node 0's driver found itself among the nodes (not the parallel layout: each plan has that).
    topology: Placement | None = None
    configs: list[RecordedPlan] = []
    deviations: dict[str, list[str]] = {}
    notes: list[str] = []
    timings: dict[str, Timing] = {}
    sessions: list[Session] = []
    pins: dict[str, str] | None = None
    # The manifest `titanbench env --json` writes: read by the report, key by key, as it finds it.
    environment: Manifest | None = None


class NodeTransport(_Record):
    """The network NCCL chose on one node (`logparse.Transport.to_dict`)."""

    networks: list[str] = []
    gpudirect: bool | None = None
    description: str = ""


class StoppedEarly(_Record):
    """A run `run --until-stable` stopped before its planned step (`stable.StoppedEarly`)."""

    at_step: int = Field(ge=1)
    planned_steps: int = Field(ge=1)
    half_width_pct: float = Field(ge=0, allow_inf_nan=False)
    # Measured seconds per step and the processes it ran on: the report's estimate of what the stop saved.
    step_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    gpus: int | None = Field(default=None, ge=1)


class AttemptRecord(_Record):
    """What a config's result.json, or one trial of it, records of its last attempt."""

    status: Status
    reason: str = ""
    model: str | None = None
    config: str | None = None
    steps: int | None = None
    fingerprint: str | None = None
    attempt: int = Field(default=0, ge=0)
    log: str | None = None
    previous_logs: list[str] = []
    evidence_checked: bool | None = None
    returncode: int | None = None
    # What result.json files not written by titanbench may call the return code.
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    last_step: int | None = None
    last_tps: float | None = None
    log_tail: list[str] = []
    nodes: dict[str, str] = {}
    # Multi-node GPU configs: per node rank whose log node 0 read.
    transport: dict[str, NodeTransport] = {}
    # Stopped by `run --until-stable` once its interval was tight enough: ok, though short of its steps.
    stopped_early: StoppedEarly | None = None


class TrialResult(AttemptRecord):
    """One trial of a config run several times (`run --repeat`): its number (from 1) and its last attempt."""

    trial: int = Field(ge=1)


class ConfigResult(AttemptRecord):
    """<model>/<config>/result.json: one config's verdict; with `run --repeat N` (N > 1), over its trials."""

    # Set only for N > 1: the trials planned, and each trial run so far, by number.
    repeat: int | None = Field(default=None, ge=1)
    trials: list[TrialResult] = []

    def trial(self, number: int) -> TrialResult | None:
        return next((t for t in self.trials if t.trial == number), None)


Record = TypeVar("Record", bound=_Record)


def _read(path: Path, model: type[Record]) -> Record | None:
    """The record at `path` checked against `model` (a bad field is one error line naming it), or None."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise TitanbenchError(f"{path}: unreadable JSON: {error}") from None
    if not isinstance(data, dict):
        raise TitanbenchError(f"{path}: expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise TitanbenchError(f"{path}: {describe_error(error)}") from None


def _write(path: Path, record: _Record) -> None:
    # Only what the writer set (or a reader found): the file keeps the keys it was given.
    write_json(path, record.model_dump(mode="json", exclude_unset=True))


def _dumped(record: _Record | None) -> dict[str, Any] | None:
    return None if record is None else record.model_dump(mode="json", exclude_unset=True)


def read_run(run_dir: Path) -> RunRecord | None:
    """run.json, or None."""
    return _read(run_dir / RUN_FILE, RunRecord)


def write_run(run_dir: Path, record: RunRecord) -> None:
    _write(run_dir / RUN_FILE, record)


def read_result(run_dir: Path, model: str, config: str) -> ConfigResult | None:
    """result.json, or None."""
    return _read(config_dir(run_dir, model, config) / RESULT_FILE, ConfigResult)


def write_result(run_dir: Path, model: str, config: str, result: ConfigResult) -> None:
    """Write a config's result; refuses to replace an `ok` one, or one holding an `ok` trial that the new
    result does not keep as it is (finished results are never lost)."""
    previous = read_result(run_dir, model, config)
    if previous and previous.status == "ok":
        raise TitanbenchError(f"{model}/{config} already finished ok in {run_dir}: not overwriting it")
    for kept in previous.trials if previous else []:
        if kept.status == "ok" and _dumped(result.trial(kept.trial)) != _dumped(kept):
            raise TitanbenchError(
                f"{model}/{config} trial {kept.trial} already finished ok in {run_dir}: not overwriting it"
            )
    _write(config_dir(run_dir, model, config) / RESULT_FILE, result)


def config_folders(run_dir: Path) -> list[tuple[str, str]]:
    """(model, config) of every config folder holding a train.log, a trial's log or a result.json, sorted."""
    if not run_dir.is_dir():
        raise TitanbenchError(f"{run_dir}: no such run directory")
    found = {
        (path.parent.parent.name, path.parent.name)
        for pattern in (f"*/*/{TRAIN_LOG}", "*/*/train.trial*.log", f"*/*/{RESULT_FILE}")
        for path in run_dir.glob(pattern)
    }
    return sorted(found)


def archive_log(path: Path) -> str | None:
    """Keep an earlier attempt's log as `<name>.attempt<N>` (first free N); return the new name."""
    if not path.exists():
        return None
    number = 1
    while path.with_name(f"{path.name}.attempt{number}").exists():
        number += 1
    target = path.with_name(f"{path.name}.attempt{number}")
    path.rename(target)
    return target.name


def previous_attempts(path: Path) -> list[str]:
    """The archived logs of `path`, oldest attempt first."""
    numbered = re.compile(re.escape(path.name) + r"\.attempt(\d+)")
    found = {int(m[1]): p.name for p in path.parent.glob(f"{path.name}.*") if (m := numbered.fullmatch(p.name))}
    return [found[number] for number in sorted(found)]


def hold_run_dir(run_dir: Path) -> int:
    """Own RUN_DIR for this driver's lifetime (returns the lock's descriptor; keep it open).

    One driver at a time per run directory: a second `run` on the same `--run-id` or `--resume` is
    refused before anything starts, naming the holder. The lock is the kernel's (flock), so a holder
    that dies, even by SIGKILL, releases it: a stale owner never blocks a resume."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 512).decode(errors="replace").strip() or "a driver that wrote nothing yet"
        os.close(fd)
        raise TitanbenchError(
            f"{run_dir} is in use by another titanbench run ({holder}): wait for it to end or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}".encode())
    return fd
