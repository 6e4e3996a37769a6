"""Test doubles for GPU facts: a stand-in NVML module and a runner answering with recorded tool output."""

from pathlib import Path

import pynvml

TOOLS = Path(__file__).parent / "data" / "tools"
H100_QUERY = TOOLS / "nvidia-smi-query-gpu_8xH100.csv"
H100_TOPO = TOOLS / "nvidia-smi-topo-m_8xH100.txt"
PCIE_TOPO = TOOLS / "nvidia-smi-topo-m_2xH100-PCIe.txt"
H100_Q = TOOLS / "nvidia-smi-q_8xH100.txt"
IBV = TOOLS / "ibv_devinfo_8xCX7.txt"


class FakeNvml:
    """Stand-in for the pynvml module: the functions gpuinfo calls, over a described set of GPUs.

    Handles are GPU indices; unsupported queries raise pynvml's own NotSupported error, as the
    real library does on GPUs or drivers that lack them.
    """

    def __init__(self, gpus: list[dict], p2p_nvlink: set[frozenset[int]], driver="550.90.07", cuda=12040):
        self.gpus, self.p2p_nvlink, self.driver, self.cuda = gpus, p2p_nvlink, driver, cuda
        self.shutdown = False

    def _field(self, handle, key):
        value = self.gpus[handle].get(key)
        if value is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return self.cuda

    def nvmlDeviceGetName(self, h):
        return self._field(h, "name").encode()  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetUUID(self, h):
        return self._field(h, "uuid")

    def nvmlDeviceGetPciInfo(self, h):
        return type("PciInfo", (), {"busId": self._field(h, "bus")})()

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return self._field(h, "cc")

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("Memory", (), {"total": self._field(h, "memory")})()

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return self._field(h, "power_mw")

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):
        return self._field(h, "default_power_mw")

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h):
        return (200_000, self._field(h, "max_power_mw"))

    def nvmlDeviceGetClockInfo(self, h, clock):
        assert clock == pynvml.NVML_CLOCK_SM
        return self._field(h, "sm_clock")

    def nvmlDeviceGetMaxClockInfo(self, h, clock):
        return self._field(h, "max_sm_clock")

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self._field(h, "reasons")

    def nvmlDeviceGetNvLinkState(self, h, link):
        if link >= self.gpus[h].get("links", 0):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return pynvml.NVML_FEATURE_ENABLED

    def nvmlDeviceGetP2PStatus(self, a, b, index):
        assert index == pynvml.NVML_P2P_CAPS_INDEX_NVLINK
        linked = frozenset((a, b)) in self.p2p_nvlink
        return pynvml.NVML_P2P_STATUS_OK if linked else pynvml.NVML_P2P_STATUS_NOT_SUPPORTED


def h100(index: int, **changes) -> dict:
    gpu = {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-{index:08d}",
        "bus": f"00000000:{0x18 + index:02X}:00.0",
        "cc": (9, 0),
        "memory": 81559 * 2**20,
        "power_mw": 500_000,
        "default_power_mw": 700_000,
        "max_power_mw": 700_000,
        "sm_clock": 1980,
        "max_sm_clock": 1980,
        "reasons": 0,
        "links": 18,
    }
    gpu.update(changes)
    return gpu


def all_pairs(n: int) -> set[frozenset[int]]:
    return {frozenset((i, j)) for i in range(n) for j in range(n) if i != j}


def nvml_8x_h100(**changes) -> FakeNvml:
    return FakeNvml([h100(i, **changes) for i in range(8)], all_pairs(8))


def sample_runner(topo: Path = H100_TOPO):
    """A command runner that answers with the recorded tool output."""
    outputs = {"--query-gpu": H100_QUERY, "-q": H100_Q, "topo": topo}

    def run(argv: list[str]) -> str:
        assert argv[0] == "nvidia-smi"
        key = "--query-gpu" if argv[1].startswith("--query-gpu=") else argv[1]
        return outputs[key].read_text()

    return run
