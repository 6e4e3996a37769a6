"""GPU and RDMA facts of this node.

GPUs: NVML (nvidia-ml-py) first, the `nvidia-smi` text tools otherwise. RDMA: /sys/class/infiniband
first (it carries the link rate), `ibv_devinfo` otherwise. Every reader takes its source as an
argument (the NVML module, a command runner, a sysfs root) so tests can hand in a fake one.
"""

import csv
import io
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml

from titanbench.logparse import strip_ansi

COMMAND_TIMEOUT_S = 60
SYS_INFINIBAND = Path("/sys/class/infiniband")

# Active clock event ("throttle") reasons, named as in `nvidia-smi -q`, keyed by NVML's bit.
CLOCK_EVENT_REASONS = {
    pynvml.nvmlClocksEventReasonGpuIdle: "gpu_idle",
    pynvml.nvmlClocksEventReasonApplicationsClocksSetting: "applications_clocks_setting",
    pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
    pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
    pynvml.nvmlClocksEventReasonSyncBoost: "sync_boost",
    pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
    pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
    pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
    pynvml.nvmlClocksEventReasonDisplayClockSetting: "display_clock_setting",
}


class Unavailable(Exception):
    """This source cannot answer on this machine (no driver, no tool, no device); the message says why."""


@dataclass
class Gpu:
    index: int
    name: str
    uuid: str | None = None
    pci_bus_id: str | None = None
    compute_capability: str | None = None
    memory_total_mib: int | None = None
    power_limit_w: float | None = None
    power_default_limit_w: float | None = None
    power_max_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    clock_event_reasons: list[str] | None = None
    nvlink_links: int | None = None


@dataclass
class GpuFacts:
    source: str
    driver_version: str | None
    cuda_driver_version: str | None
    gpus: list[Gpu]
    # nvlink[i][j]: GPUs i and j talk over NVLink (None on the diagonal and where unknown).
    nvlink: list[list[bool | None]] = field(default_factory=list)


@dataclass
class RdmaPort:
    device: str
    port: int
    state: str
    link_layer: str | None = None
    rate: str | None = None
    fw_ver: str | None = None


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]


# ---- NVML -------------------------------------------------------------------------------------


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _optional(call: Callable[..., Any], *args: Any) -> Any:
    """One NVML field; a GPU or driver that does not support it gives None, not a failed report."""
    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def _nvlink_between(nvml: Any, a: Any, b: Any) -> bool | None:
    """True/False where NVML can tell; None (unknown) where the query fails, never a false "no NVLink"."""
    status = _optional(nvml.nvmlDeviceGetP2PStatus, a, b, pynvml.NVML_P2P_CAPS_INDEX_NVLINK)
    return None if status is None else status == pynvml.NVML_P2P_STATUS_OK


def _watts(milliwatts: int | None) -> float | None:
    return None if milliwatts is None else milliwatts / 1000


def _nvml_gpu(nvml: Any, index: int, handle: Any) -> Gpu:
    cc = _optional(nvml.nvmlDeviceGetCudaComputeCapability, handle)
    memory = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
    constraints = _optional(nvml.nvmlDeviceGetPowerManagementLimitConstraints, handle)
    reasons = _optional(nvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
    links = 0
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        if _optional(nvml.nvmlDeviceGetNvLinkState, handle, link) == pynvml.NVML_FEATURE_ENABLED:
            links += 1
    return Gpu(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_optional(lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
        pci_bus_id=_optional(lambda: _text(nvml.nvmlDeviceGetPciInfo(handle).busId)),
        compute_capability=None if cc is None else f"{cc[0]}.{cc[1]}",
        memory_total_mib=None if memory is None else memory.total // 2**20,
        power_limit_w=_watts(_optional(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)),
        power_default_limit_w=_watts(_optional(nvml.nvmlDeviceGetPowerManagementDefaultLimit, handle)),
        power_max_limit_w=None if constraints is None else _watts(constraints[1]),
        sm_clock_mhz=_optional(nvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
        max_sm_clock_mhz=_optional(nvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM),
        clock_event_reasons=None if reasons is None else reason_names(reasons),
        nvlink_links=links,
    )


def read_nvml(nvml: Any = pynvml) -> GpuFacts:
    """GPU facts through NVML. `nvml` is the pynvml module or a stand-in with the same functions."""
    try:
        nvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise Unavailable(f"NVML: {error}") from None
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        if not handles:
            raise Unavailable("NVML: the driver sees no GPU")
        cuda = _optional(nvml.nvmlSystemGetCudaDriverVersion_v2)
        gpus = [_nvml_gpu(nvml, i, handle) for i, handle in enumerate(handles)]
        nvlink: list[list[bool | None]] = [
            [None if i == j else _nvlink_between(nvml, a, b) for j, b in enumerate(handles)]
            for i, a in enumerate(handles)
        ]
        return GpuFacts(
            source="nvml",
            driver_version=_text(nvml.nvmlSystemGetDriverVersion()),
            cuda_driver_version=None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
            gpus=gpus,
            nvlink=nvlink,
        )
    except pynvml.NVMLError as error:
        raise Unavailable(f"NVML: {error}") from None
    finally:
        _optional(nvml.nvmlShutdown)


# ---- nvidia-smi -------------------------------------------------------------------------------

# Fields asked of `nvidia-smi --query-gpu` (see `nvidia-smi --help-query-gpu`), in CSV column order.
QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "compute_cap",
    "memory.total",
    "power.limit",
    "power.default_limit",
    "power.max_limit",
    "clocks.sm",
    "clocks.max.sm",
    "clocks_event_reasons.active",
    "driver_version",
)


def run_command(argv: list[str]) -> str:
    """stdout of a diagnostic tool; Unavailable when it is missing or fails."""
    if shutil.which(argv[0]) is None:
        raise Unavailable(f"{argv[0]}: not found on PATH")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{argv[0]}: {error}") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise Unavailable(f"{argv[0]} exited {done.returncode}: {last[-1] if last else 'no output'}")
    return done.stdout


def _value(raw: str) -> str | None:
    raw = raw.strip()
    return None if not raw or raw.startswith("[") or raw == "N/A" else raw


def _number(raw: str | None, kind: type = float) -> Any:
    if raw is None:
        return None
    try:
        return kind(float(raw)) if kind is int else kind(raw)
    except ValueError:
        return None


def parse_query_gpu(text: str) -> list[Gpu]:
    """Rows of `nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`, columns in that order."""
    gpus: list[Gpu] = []
    for row in csv.reader(io.StringIO(text.strip()), skipinitialspace=True):
        if not row:
            continue
        cell = {name: _value(raw) for name, raw in zip(QUERY_FIELDS, row, strict=False)}
        reasons = cell["clocks_event_reasons.active"]
        gpus.append(
            Gpu(
                index=int(cell["index"] or len(gpus)),
                name=cell["name"] or "unknown",
                uuid=cell["uuid"],
                pci_bus_id=cell["pci.bus_id"],
                compute_capability=cell["compute_cap"],
                memory_total_mib=_number(cell["memory.total"], int),
                power_limit_w=_number(cell["power.limit"]),
                power_default_limit_w=_number(cell["power.default_limit"]),
                power_max_limit_w=_number(cell["power.max_limit"]),
                sm_clock_mhz=_number(cell["clocks.sm"], int),
                max_sm_clock_mhz=_number(cell["clocks.max.sm"], int),
                clock_event_reasons=None if reasons is None else reason_names(int(reasons, 16)),
            )
        )
    return gpus


def _topo_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, GPU rows) of `nvidia-smi topo -m`; the header is the indented first line
    (drivers underline it with terminal escape codes, which go first)."""
    lines = [line for line in strip_ansi(text).splitlines() if line.strip()]
    header = lines[0].split() if lines and lines[0][0].isspace() else []
    rows = [line.split() for line in lines[1:] if re.match(r"GPU\d+\s", line)]
    return header, rows


def parse_topo_matrix(text: str) -> list[list[bool | None]]:
    """The GPU x GPU block of `nvidia-smi topo -m`: True where the cell is NV<n>."""
    header, rows = _topo_rows(text)
    gpu_columns = [i for i, name in enumerate(header) if re.fullmatch(r"GPU\d+", name)]
    # Row cells are shifted by one against the header: the row label comes first.
    return [[None if row[c + 1] == "X" else row[c + 1].startswith("NV") for c in gpu_columns] for row in rows]


def parse_topo_links(text: str) -> list[int]:
    """Per GPU, the widest NVLink bond `nvidia-smi topo -m` shows (NV18 -> 18)."""
    _, rows = _topo_rows(text)
    return [max((int(c[2:]) for c in row[1:] if re.fullmatch(r"NV\d+", c)), default=0) for row in rows]


# `Key    : value`; a colon inside a value (a time, a bus id) is not a separator.
_SMI_Q_PAIR = re.compile(r"^(\S.*?)\s*:\s(.*)$")


def parse_smi_q(text: str) -> dict[str, Any]:
    """`nvidia-smi -q` as nested dicts, by indentation; `GPU 00000000:18:00.0` sections keep their titles."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for line in text.splitlines():
        if not line.strip() or line.startswith("="):
            continue
        indent = len(line) - len(line.lstrip())
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        pair = _SMI_Q_PAIR.match(line.strip())
        if pair:
            parent[pair[1]] = pair[2].strip()
        else:
            section: dict[str, Any] = {}
            parent[line.strip().rstrip(":").strip()] = section
            stack.append((indent, section))
    return root


def read_nvidia_smi(run: Callable[[list[str]], str] = run_command) -> GpuFacts:
    query = run(["nvidia-smi", f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"])
    gpus = parse_query_gpu(query)
    if not gpus:
        raise Unavailable("nvidia-smi: lists no GPU")
    header = parse_smi_q(run(["nvidia-smi", "-q"]))
    topo = run(["nvidia-smi", "topo", "-m"])
    for gpu, links in zip(gpus, parse_topo_links(topo), strict=False):
        gpu.nvlink_links = links
    return GpuFacts(
        source="nvidia-smi",
        driver_version=header.get("Driver Version"),
        cuda_driver_version=header.get("CUDA Version"),
        gpus=gpus,
        nvlink=parse_topo_matrix(topo),
    )


def gpu_facts(nvml: Any = pynvml, run: Callable[[list[str]], str] = run_command) -> tuple[GpuFacts | None, str | None]:
    """(facts, None), or (None, why neither NVML nor nvidia-smi could answer)."""
    reasons = []
    for reader in (lambda: read_nvml(nvml), lambda: read_nvidia_smi(run)):
        try:
            return reader(), None
        except Unavailable as error:
            reasons.append(str(error))
    return None, "; ".join(reasons)


# ---- RDMA -------------------------------------------------------------------------------------


def _port_state(raw: str) -> str:
    """`PORT_ACTIVE (4)` (ibv_devinfo) or `4: ACTIVE` (sysfs) -> `ACTIVE`."""
    raw = re.sub(r"\s*\(\d+\)$", "", raw.strip())
    raw = re.sub(r"^\d+:\s*", "", raw)
    return raw.removeprefix("PORT_")


def parse_ibv_devinfo(text: str) -> list[RdmaPort]:
    ports: list[RdmaPort] = []
    device, fw_ver = "", None
    current: RdmaPort | None = None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "hca_id":
            device, fw_ver, current = value, None, None
        elif key == "fw_ver":
            fw_ver = value
        elif key == "port" and value.isdigit():
            current = RdmaPort(device=device, port=int(value), state="UNKNOWN", fw_ver=fw_ver)
            ports.append(current)
        elif current is not None and key == "state":
            current.state = _port_state(value)
        elif current is not None and key == "link_layer":
            current.link_layer = value
    return ports


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_sysfs_rdma(root: Path = SYS_INFINIBAND) -> list[RdmaPort]:
    ports = []
    for device in sorted(root.iterdir()) if root.is_dir() else []:
        for port_dir in sorted((device / "ports").glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else 0):
            ports.append(
                RdmaPort(
                    device=device.name,
                    port=int(port_dir.name),
                    state=_port_state(_read(port_dir / "state") or "UNKNOWN"),
                    link_layer=_read(port_dir / "link_layer"),
                    rate=_read(port_dir / "rate"),
                    fw_ver=_read(device / "fw_ver"),
                )
            )
    return ports


def rdma_ports(
    root: Path = SYS_INFINIBAND, run: Callable[[list[str]], str] = run_command
) -> tuple[list[RdmaPort], str | None]:
    """(ports, None), or ([], why none were found)."""
    ports = read_sysfs_rdma(root)
    if ports:
        return ports, None
    try:
        ports = parse_ibv_devinfo(run(["ibv_devinfo"]))
    except Unavailable as error:
        return [], f"no devices under {root}; {error}"
    return ports, None if ports else f"no devices under {root}; ibv_devinfo lists none"
