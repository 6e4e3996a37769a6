"""The results layout, shared by `run` (writer) and `report` (reader).

    RUN_DIR/run.json                       the plan, topology, environment, timings (optional)
    RUN_DIR/<model>/<config>/train.log     node 0's console log (rank 0): the numbers come from here
    RUN_DIR/<model>/<config>/node<R>.log   other nodes' logs
    RUN_DIR/<model>/<config>/result.json   status of that config (optional: logs alone are enough)
    RUN_DIR/results.json, RESULTS.md, RESULTS.png   written by the report

Every JSON file is written atomically; a finished `ok` result is never overwritten.
"""

import json
import re
from pathlib import Path
from typing import Any

from titanbench.atomic import write_json
from titanbench.errors import TitanbenchError

RUN_FILE = "run.json"
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
    return _read_json(run_dir / RUN_FILE)


def write_run(run_dir: Path, data: dict[str, Any]) -> None:
    write_json(run_dir / RUN_FILE, data)


def read_result(run_dir: Path, model: str, config: str) -> dict[str, Any] | None:
    return _read_json(config_dir(run_dir, model, config) / RESULT_FILE)


def write_result(run_dir: Path, model: str, config: str, result: dict[str, Any]) -> None:
    """Write a config's result; refuses to replace an `ok` one (finished results are never lost)."""
    if result.get("status") not in STATUSES:
        raise ValueError(f"unknown status {result.get('status')!r}")
    previous = read_result(run_dir, model, config)
    if previous and previous.get("status") == "ok":
        raise TitanbenchError(f"{model}/{config} already finished ok in {run_dir}: not overwriting it")
    write_json(config_dir(run_dir, model, config) / RESULT_FILE, result)


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
