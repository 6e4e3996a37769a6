"""Read torchtitan's training logs: the metric windows, the profiler dumps, and the lines that prove
what a run did (async TP, the float8 recipe, the network NCCL chose between nodes).

torchtitan logs one metrics line at step 1 and every `log_freq` steps; each line reports the window of
steps since the previous one. Real logs wrap those lines in ANSI colours, logger and torchrun prefixes,
repeat them once per rank, and sometimes glue several records onto one physical line, so fields are
found by name, never by column. Pure Python: no torch, matplotlib or docker.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# CSI escape sequences (colours and the like), as torchtitan's `Color` class emits them.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_FLOAT = rf"(?:{_NUMBER}|[-+]?(?:nan|inf)(?![\w]))"


def _field(name: str, value: str) -> re.Pattern[str]:
    # The look-behind keeps `loss:` from matching inside e.g. `aux_loss:`.
    return re.compile(rf"(?<![\w]){name}:\s*{value}", re.IGNORECASE)


_FIELD_NAMES = r"(?:loss|grad_norm|memory|tps|wps|tflops|mfu)"
# Newer torchtitan also logs `validate step: N  loss: ...` lines: those are not training windows.
# The literal comes first so that `re` scans for it at C speed; the look-behinds then check its left edge.
_STEP = re.compile(rf"step:(?<![\w]step:)(?<!validate step:)\s*(\d+)(?=\s+{_FIELD_NAMES}:)")
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
# NCCL's INFO lines (NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET): the network plugin a communicator
# uses ("IB" covers InfiniBand and RoCE; "Socket" is TCP; a plugin prints its own name), and each
# connection through it, `/GDRDMA` when the NIC reads GPU memory directly (GPUDirect RDMA).
_NCCL_NETWORK = re.compile(r"NCCL INFO Using network (\S[^\r\n]*?)\s*$")
_NCCL_NET_CHANNEL = re.compile(r"NCCL INFO Channel [^\r\n]*? via NET/[^/\r\n]+/\d+(?:\(\d+\))?(/GDRDMA)?")
SOCKET_NETWORK = "Socket"


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True)
class Transport:
    """The network NCCL chose, as one node's log shows it (empty without NCCL's INFO lines)."""

    networks: tuple[str, ...]  # every `Using network X`, first seen first
    net_connections: int  # connections set up through the network (`via NET/...`)
    gdr_connections: int  # of those, with GPUDirect RDMA

    @property
    def gpudirect(self) -> bool | None:
        """All network connections GPUDirect (None: the log shows none)."""
        return self.gdr_connections == self.net_connections if self.net_connections else None

    def describe(self) -> str:
        if not self.networks:
            return "not logged"
        gdr = {True: ", GPUDirect RDMA", False: ", no GPUDirect RDMA", None: ""}[self.gpudirect]
        return "/".join(self.networks) + gdr


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


def _line_records(clean: str, skip: Callable[[int], bool] = lambda step: False) -> list[Window]:
    """The metrics records of one physical line (ANSI already stripped); a record never spans lines.
    Records whose step `skip` rejects are not parsed (another rank's copy of a step already kept)."""
    starts = list(_STEP.finditer(clean))
    windows = []
    for index, match in enumerate(starts):
        step = int(match.group(1))
        if skip(step):
            continue
        limit = starts[index + 1].start() if index + 1 < len(starts) else len(clean)
        end = _RECORD_START.search(clean, match.end(), limit)
        segment = clean[match.end() : end.start() if end else limit]
        windows.append(_window(step, segment))
    return windows


@dataclass
class LogScan:
    """What one pass over a log keeps: its metrics records and the lines that matter, not the text.

    Memory grows with the number of metrics records only, whatever else the log holds (NCCL INFO lines,
    warnings, tracebacks)."""

    # Per step, the record that counts: the first, unless it lost its tps to a record glued into it
    # and a later copy has one.
    kept: dict[int, Window] = field(default_factory=dict)
    dumps: set[int] = field(default_factory=set)
    async_tp: bool = False
    float8_recipe: str | None = None  # the first `Float8 training active with recipe X`
    float8_tensorwise: bool = False
    networks: list[str] = field(default_factory=list)
    net_connections: int = 0
    gdr_connections: int = 0
    has_text: bool = False  # anything but whitespace

    def add(self, line: str) -> None:
        if not self.has_text and line.strip():
            self.has_text = True
        # Cheap substring tests first: most lines of a real log are none of these.
        if "\x1b" in line:
            line = strip_ansi(line)
        if "step" in line:
            match = _STEP.search(line)
            # Most metrics lines are another rank's copy of a step already kept: one search, no parse.
            duplicate = match is not None and self._complete(int(match.group(1)))
            if match is not None and not (duplicate and line.find("step:", match.end()) == -1):
                for record in _line_records(line, self._complete):
                    kept = self.kept.get(record.step)
                    if kept is None or (kept.tps is None and record.tps is not None):
                        self.kept[record.step] = record
            if "Dumping profiler" in line:
                self.dumps.update(int(step) for step in _TRACE_DUMP.findall(line))
        if not self.async_tp and "Async Tensor Parallelism" in line:
            self.async_tp = bool(_ASYNC_TP.search(line))
        if "Float8" in line:
            if self.float8_recipe is None and (recipe := _FLOAT8_RECIPE.search(line)):
                self.float8_recipe = recipe.group(1)
            self.float8_tensorwise = self.float8_tensorwise or bool(_FLOAT8_TENSORWISE.search(line))
        if "NCCL INFO" in line:
            self._nccl(line)

    def _nccl(self, line: str) -> None:
        if "Using network" in line and (network := _NCCL_NETWORK.search(line)):
            if network.group(1) not in self.networks:
                self.networks.append(network.group(1))
        elif "via NET/" in line and (connection := _NCCL_NET_CHANNEL.search(line)):
            self.net_connections += 1
            self.gdr_connections += bool(connection.group(1))

    def _complete(self, step: int) -> bool:
        kept = self.kept.get(step)
        return kept is not None and kept.tps is not None

    def windows(self) -> list[Window]:
        """One window per step, sorted by step (every rank prints the same step: see `kept`)."""
        return [self.kept[step] for step in sorted(self.kept)]

    def evidence(self) -> Evidence:
        recipe = self.float8_recipe or ("tensorwise" if self.float8_tensorwise else None)
        return Evidence(async_tp=self.async_tp, float8_recipe=recipe)

    def transport(self) -> Transport:
        return Transport(tuple(self.networks), self.net_connections, self.gdr_connections)


def scan_lines(lines: Iterable[str]) -> LogScan:
    scan = LogScan()
    for line in lines:
        scan.add(line)
    return scan


def scan_file(path: Path) -> LogScan:
    """Stream a log file line by line (undecodable bytes replaced)."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        return scan_lines(lines)


def scan_text(text: str) -> LogScan:
    return scan_lines(text.splitlines())


def iter_windows(text: str) -> list[Window]:
    """Every metrics record in log order, duplicates included."""
    return [record for line in text.splitlines() for record in _line_records(strip_ansi(line))]


def parse_windows(text: str) -> list[Window]:
    """One window per step, sorted by step (see `LogScan.windows`)."""
    return scan_text(text).windows()


def trace_dump_steps(text: str) -> list[int]:
    """The steps after which torchtitan's profiler wrote a trace, as the log reports them."""
    return sorted(scan_text(text).dumps)


def evidence(text: str) -> Evidence:
    return scan_text(text).evidence()


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


def transport_problems(transports: dict[int, Transport], accept_sockets: bool = False) -> list[str]:
    """Why the logs do not prove the nodes talked over RDMA (empty when they do), per node log read.

    The one transport rule, for multi-node configs: NCCL's fall-back to TCP sockets finishes `ok` at a
    fraction of the published TPS, so it must be visible, like a missing async-TP line."""
    problems = []
    for rank, transport in sorted(transports.items()):
        if not transport.networks:
            problems.append(f"node {rank}'s log names no NCCL network ('NCCL INFO Using network'): transport unproven")
        elif SOCKET_NETWORK in transport.networks and not accept_sockets:
            problems.append(
                f"node {rank}: NCCL used TCP sockets between nodes (NET/Socket), not RDMA: "
                "the TPS is not comparable (--accept-socket-transport if this fabric has no RDMA)"
            )
    return problems
