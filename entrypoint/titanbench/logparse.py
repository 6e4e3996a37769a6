"""Read torchtitan's training logs: the metric windows, the profiler dumps, and the lines that prove
what a run did (async TP, the float8 recipe).

torchtitan logs one metrics line at step 1 and every `log_freq` steps; each line reports the window of
steps since the previous one. Real logs wrap those lines in ANSI colours, logger and torchrun prefixes,
repeat them once per rank, and sometimes glue several records onto one physical line, so fields are
found by name, never by column. Pure Python: no torch, matplotlib or docker.
"""

import re
from dataclasses import dataclass

# CSI escape sequences (colours and the like), as torchtitan's `Color` class emits them.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_FLOAT = rf"(?:{_NUMBER}|[-+]?(?:nan|inf)(?![\w]))"


def _field(name: str, value: str) -> re.Pattern[str]:
    # The look-behind keeps `loss:` from matching inside e.g. `aux_loss:`.
    return re.compile(rf"(?<![\w]){name}:\s*{value}", re.IGNORECASE)


_FIELD_NAMES = r"(?:loss|grad_norm|memory|tps|wps|tflops|mfu)"
# Newer torchtitan also logs `validate step: N  loss: ...` lines: those are not training windows.
_STEP = re.compile(rf"(?<![\w])(?<!validate )step:\s*(\d+)(?=\s+{_FIELD_NAMES}:)")
_LOSS = _field("loss", f"({_FLOAT})")
_GRAD_NORM = _field("grad_norm", f"({_FLOAT})")
_MEMORY = _field("memory", rf"({_NUMBER})\s*GiB(?:\s*\(\s*({_NUMBER})\s*%\s*\))?")
# Logs from before mid-2024 call the same per-GPU throughput `wps`.
_TPS = _field("(?:tps|wps)", r"(\d[\d,]*(?:\.\d+)?)")
_TFLOPS = _field("tflops", f"({_NUMBER})")
_MFU = _field("mfu", rf"({_NUMBER})\s*%")

# Where another log record starts: a metrics line's fields never run past one of these.
_RECORD_START = re.compile(r"[\r\n]|\[rank\d+\]:|\[titan\]|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")

_TRACE_DUMP = re.compile(r"Dumping profiler traces at step (\d+)")
_ASYNC_TP = re.compile(r"Applied [^\r\n]*?Async Tensor Parallelism to the model")
_FLOAT8_RECIPE = re.compile(r"Float8 training active with recipe (\w+)")
_FLOAT8_TENSORWISE = re.compile(r"Float8 tensorwise scaled training active")


@dataclass(frozen=True)
class Window:
    """One metrics line: the window of steps ending at `step`. `tps` is tokens/s per GPU."""

    step: int
    tps: float | None
    loss: float | None
    memory_gib: float | None
    memory_pct: float | None
    tflops: float | None
    mfu: float | None
    grad_norm: float | None


@dataclass(frozen=True)
class Evidence:
    """What the log itself says the run did."""

    async_tp: bool
    float8_recipe: str | None


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    return float(text.replace(",", ""))


def _first(pattern: re.Pattern[str], segment: str, group: int = 1) -> float | None:
    match = pattern.search(segment)
    return _number(match.group(group)) if match else None


def _window(step: int, segment: str) -> Window:
    memory = _MEMORY.search(segment)
    return Window(
        step=step,
        tps=_first(_TPS, segment),
        loss=_first(_LOSS, segment),
        memory_gib=_number(memory.group(1)) if memory else None,
        memory_pct=_number(memory.group(2)) if memory else None,
        tflops=_first(_TFLOPS, segment),
        mfu=_first(_MFU, segment),
        grad_norm=_first(_GRAD_NORM, segment),
    )


def iter_windows(text: str) -> list[Window]:
    """Every metrics record in log order, duplicates included."""
    clean = strip_ansi(text)
    starts = list(_STEP.finditer(clean))
    windows = []
    for index, match in enumerate(starts):
        limit = starts[index + 1].start() if index + 1 < len(starts) else len(clean)
        end = _RECORD_START.search(clean, match.end(), limit)
        segment = clean[match.end() : end.start() if end else limit]
        windows.append(_window(int(match.group(1)), segment))
    return windows


def parse_windows(text: str) -> list[Window]:
    """One window per step, sorted by step. Every rank prints the same step; the first record wins,
    unless it lost its tps to a record glued into it and a later copy has one."""
    first: dict[int, Window] = {}
    for window in iter_windows(text):
        kept = first.get(window.step)
        if kept is None or (kept.tps is None and window.tps is not None):
            first[window.step] = window
    return [first[step] for step in sorted(first)]


def trace_dump_steps(text: str) -> list[int]:
    """The steps after which torchtitan's profiler wrote a trace, as the log reports them."""
    return sorted({int(step) for step in _TRACE_DUMP.findall(strip_ansi(text))})


def evidence(text: str) -> Evidence:
    clean = strip_ansi(text)
    recipe = _FLOAT8_RECIPE.search(clean)
    if recipe:
        float8_recipe: str | None = recipe.group(1)
    elif _FLOAT8_TENSORWISE.search(clean):
        float8_recipe = "tensorwise"
    else:
        float8_recipe = None
    return Evidence(async_tp=bool(_ASYNC_TP.search(clean)), float8_recipe=float8_recipe)


def evidence_problems(tp_type: str | None, quantization: str | None, found: Evidence) -> list[str]:
    """Why the log does not prove the config did what its labels say (empty when it does).

    The one evidence rule: the runner applies it to classify a finished config, the report to logs alone.
    """
    problems = []
    if tp_type == "async" and not found.async_tp:
        problems.append("no 'Applied ... Async Tensor Parallelism' line in the log")
    if tp_type == "vanilla" and found.async_tp:
        problems.append("the log says async TP was applied to a vanilla config")
    expected = quantization.removeprefix("float8_") if quantization and quantization != "bf16" else None
    if expected != found.float8_recipe:
        problems.append(f"the log shows float8 recipe {found.float8_recipe or 'none'}, expected {expected or 'none'}")
    return problems
