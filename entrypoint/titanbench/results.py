"""The results layout, shared by `run` (writer) and `report` (reader).

    RUN_DIR/run.json                       the plan, topology, environment, timings (optional)
    RUN_DIR/<model>/<config>/train.log     node 0's console log (rank 0): the numbers come from here
    RUN_DIR/<model>/<config>/node<R>.log   other nodes' logs
    RUN_DIR/<model>/<config>/result.json   status of that config (optional: logs alone are enough)
    RUN_DIR/results.json, RESULTS.md, RESULTS.png   written by the report

Every JSON file is written atomically; a finished `ok` result is never overwritten.
"""

import fcntl
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from titanbench.atomic import write_json
from titanbench.clock import utc_now
from titanbench.errors import TitanbenchError
from titanbench.spec import describe_error

RUN_FILE = "run.json"
# Held (flock) by the driver that owns the run directory; see hold_run_dir.
LOCK_FILE = ".lock"
RESULT_FILE = "result.json"
TRAIN_LOG = "train.log"
# ok; skipped (cannot run on this device: never launched, never a failure); and the ways a config fails.
STATUSES = (
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
)


def config_dir(run_dir: Path, model: str, config: str) -> Path:
    return run_dir / model / config


def log_path(run_dir: Path, model: str, config: str, node_rank: int = 0) -> Path:
    name = TRAIN_LOG if node_rank == 0 else f"node{node_rank}.log"
    return config_dir(run_dir, model, config) / name


class _Record(BaseModel):
    # Fields a reader relies on are typed; anything else a writer adds passes through.
    model_config = ConfigDict(extra="allow")


class RecordedTopology(_Record):
    nodes: int
    gpus_per_node: int
    tp: int
    fsdp: int


class RecordedPlan(_Record):
    """A `ConfigPlan.to_dict()` as run.json keeps it."""

    model: str
    config: str
    tp_type: str | None = None
    quantization: str | None = None
    topology: RecordedTopology | None = None
    published_tps: float | None = None
    deviations: list[str] = []
    trainer: str | None = None
    device: str | None = None


class RunRecord(_Record):
    """run.json: written by node 0's driver, read by `--resume` and by the report."""

    status: str | None = None
    created_at: str | None = None
    request: dict[str, Any] | None = None
    fingerprint: str | None = None
    configs: list[RecordedPlan] = []
    deviations: dict[str, list[str]] = {}
    notes: list[str] = []
    timings: dict[str, dict[str, Any]] = {}
    sessions: list[dict[str, Any]] = []
    pins: dict[str, str] | None = None


class NodeTransport(_Record):
    """The network NCCL chose on one node (`logparse.Transport.to_dict`)."""

    networks: list[str] = []
    gpudirect: bool | None = None
    description: str = ""


class ConfigResult(_Record):
    """<model>/<config>/result.json: one config's verdict."""

    status: Literal[STATUSES]  # type: ignore[valid-type]
    reason: str = ""
    attempt: int = Field(default=0, ge=0)
    log: str | None = None
    previous_logs: list[str] = []
    evidence_checked: bool | None = None
    returncode: int | None = None
    last_step: int | None = None
    log_tail: list[str] = []
    nodes: dict[str, str] = {}
    # Multi-node GPU configs: per node rank whose log node 0 read.
    transport: dict[str, NodeTransport] = {}


def _validated(path: Path, model: type[_Record], data: dict[str, Any]) -> dict[str, Any]:
    try:
        return model.model_validate(data).model_dump(exclude_unset=True)
    except ValidationError as error:
        raise TitanbenchError(f"{path}: {describe_error(error)}") from None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise TitanbenchError(f"{path}: unreadable JSON: {error}") from None
    if not isinstance(data, dict):
        raise TitanbenchError(f"{path}: expected a JSON object")
    return data


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """run.json checked against `RunRecord` (a bad field is one error line naming it), or None."""
    path = run_dir / RUN_FILE
    data = _read_json(path)
    return None if data is None else _validated(path, RunRecord, data)


def write_run(run_dir: Path, data: dict[str, Any]) -> None:
    path = run_dir / RUN_FILE
    write_json(path, _validated(path, RunRecord, data))


def read_result(run_dir: Path, model: str, config: str) -> dict[str, Any] | None:
    """result.json checked against `ConfigResult`, or None."""
    path = config_dir(run_dir, model, config) / RESULT_FILE
    data = _read_json(path)
    return None if data is None else _validated(path, ConfigResult, data)


def write_result(run_dir: Path, model: str, config: str, result: dict[str, Any]) -> None:
    """Write a config's result; refuses to replace an `ok` one (finished results are never lost)."""
    if result.get("status") not in STATUSES:
        raise ValueError(f"unknown status {result.get('status')!r}")
    path = config_dir(run_dir, model, config) / RESULT_FILE
    previous = read_result(run_dir, model, config)
    if previous and previous.get("status") == "ok":
        raise TitanbenchError(f"{model}/{config} already finished ok in {run_dir}: not overwriting it")
    write_json(path, _validated(path, ConfigResult, result))


def config_folders(run_dir: Path) -> list[tuple[str, str]]:
    """(model, config) of every config folder holding a train.log or a result.json, sorted."""
    if not run_dir.is_dir():
        raise TitanbenchError(f"{run_dir}: no such run directory")
    found = {
        (path.parent.parent.name, path.parent.name)
        for pattern in (f"*/*/{TRAIN_LOG}", f"*/*/{RESULT_FILE}")
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
