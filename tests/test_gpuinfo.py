from pathlib import Path

import pynvml
import pytest

from conftest import skip_on_this_hardware
from fake_nvml import H100_Q, H100_QUERY, H100_TOPO, IBV, PCIE_TOPO, FakeNvml, h100, nvml_8x_h100, sample_runner
from titanbench import gpuinfo


def test_nvml_reads_every_field_through_the_seam():
    nvml = nvml_8x_h100(reasons=pynvml.nvmlClocksEventReasonSwPowerCap | pynvml.nvmlClocksEventReasonGpuIdle)
    facts = gpuinfo.read_nvml(nvml)
    assert facts.source == "nvml"
    assert (facts.driver_version, facts.cuda_driver_version) == ("550.90.07", "12.4")
    first = facts.gpus[0]
    assert first.name == "NVIDIA H100 80GB HBM3"
    assert first.pci_bus_id == "00000000:18:00.0"
    assert first.compute_capability == "9.0"
    assert first.memory_total_mib == 81559
    assert (first.power_limit_w, first.power_default_limit_w, first.power_max_limit_w) == (500, 700, 700)
    assert first.clock_event_reasons == ["gpu_idle", "sw_power_cap"]
    assert first.nvlink_links == 18
    assert len(facts.gpus) == 8
    assert all(facts.nvlink[i][j] is (None if i == j else True) for i in range(8) for j in range(8))
    assert nvml.shutdown


def test_nvml_unsupported_fields_become_none_and_missing_pairs_false():
    gpus = [h100(0, cc=None, reasons=None), h100(1)]
    facts = gpuinfo.read_nvml(FakeNvml(gpus, p2p_nvlink=set()))
    assert facts.gpus[0].compute_capability is None
    assert facts.gpus[0].clock_event_reasons is None
    assert facts.nvlink == [[None, False], [False, None]]


def test_nvml_without_gpus_is_unavailable():
    with pytest.raises(gpuinfo.Unavailable, match="no GPU"):
        gpuinfo.read_nvml(FakeNvml([], set()))


def test_real_pynvml_on_a_machine_without_driver_reports_why():
    facts, reason = gpuinfo.gpu_facts(run=lambda argv: (_ for _ in ()).throw(gpuinfo.Unavailable("nvidia-smi: gone")))
    if facts is not None:
        skip_on_this_hardware("this machine has an NVIDIA driver")
    assert reason.startswith("NVML: ")
    assert reason.endswith("nvidia-smi: gone")


def test_query_gpu_csv_parses_the_sample():
    gpus = gpuinfo.parse_query_gpu(H100_QUERY.read_text())
    assert [g.index for g in gpus] == list(range(8))
    assert {g.name for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert gpus[3].pci_bus_id == "00000000:5D:00.0"
    assert gpus[0].compute_capability == "9.0"
    assert gpus[0].memory_total_mib == 81559
    assert gpus[0].power_limit_w == 700.0
    assert (gpus[0].sm_clock_mhz, gpus[0].max_sm_clock_mhz) == (345, 1980)
    assert gpus[0].clock_event_reasons == ["gpu_idle"]


def test_query_gpu_not_supported_cells_become_none():
    row = (
        "0, NVIDIA H100 PCIe, GPU-x, 00000000:01:00.0, 9.0, 81559, [N/A], 350.00, 350.00, 1755, 1755, "
        "[Not Supported], 535.104.05"
    )
    gpu = gpuinfo.parse_query_gpu(row)[0]
    assert gpu.power_limit_w is None
    assert gpu.clock_event_reasons is None


def test_topo_matrix_of_nvswitch_system_is_all_to_all():
    matrix = gpuinfo.parse_topo_matrix(H100_TOPO.read_text())
    assert len(matrix) == 8
    assert all(matrix[i][j] is (None if i == j else True) for i in range(8) for j in range(8))
    assert gpuinfo.parse_topo_links(H100_TOPO.read_text()) == [18] * 8


def test_topo_matrix_of_pcie_system_has_no_nvlink():
    assert gpuinfo.parse_topo_matrix(PCIE_TOPO.read_text()) == [[None, False], [False, None]]
    assert gpuinfo.parse_topo_links(PCIE_TOPO.read_text()) == [0, 0]


def test_smi_q_nests_sections_and_keeps_colons_in_values():
    q = gpuinfo.parse_smi_q(H100_Q.read_text())
    assert q["Driver Version"] == "550.90.07"
    assert q["CUDA Version"] == "12.4"
    assert q["Timestamp"] == "Mon Jun 16 10:21:07 2025"
    gpu = q["GPU 00000000:DB:00.0"]
    assert gpu["GPU Power Readings"]["Current Power Limit"] == "700.00 W"
    assert gpu["Clocks Event Reasons"]["HW Thermal Slowdown"] == "Not Active"
    assert gpu["PCI"]["GPU Link Info"]["Link Width"]["Max"] == "16x"


def test_nvidia_smi_reader_combines_the_three_tools():
    facts = gpuinfo.read_nvidia_smi(sample_runner())
    assert facts.source == "nvidia-smi"
    assert (facts.driver_version, facts.cuda_driver_version) == ("550.90.07", "12.4")
    assert [g.nvlink_links for g in facts.gpus] == [18] * 8
    assert facts.nvlink[0][7] is True


def test_gpu_facts_falls_back_to_nvidia_smi_when_nvml_fails():
    class BrokenNvml:
        def nvmlInit(self):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    facts, reason = gpuinfo.gpu_facts(nvml=BrokenNvml(), run=sample_runner())
    assert reason is None
    assert facts.source == "nvidia-smi"


def test_ibv_devinfo_sample():
    ports = gpuinfo.parse_ibv_devinfo(IBV.read_text())
    assert [p.device for p in ports] == [f"mlx5_{i}" for i in range(9)]
    assert {p.state for p in ports[:8]} == {"ACTIVE"}
    assert {p.link_layer for p in ports[:8]} == {"InfiniBand"}
    assert (ports[8].state, ports[8].link_layer) == ("DOWN", "Ethernet")
    assert ports[0].fw_ver == "28.39.1002"
    assert ports[0].port == 1


def make_sysfs(root: Path, devices: dict[str, str]) -> Path:
    """A /sys/class/infiniband tree: device name -> port 1 state line (as the kernel writes it)."""
    for name, state in devices.items():
        port = root / name / "ports" / "1"
        port.mkdir(parents=True)
        (root / name / "fw_ver").write_text("28.39.1002\n")
        (port / "state").write_text(f"{state}\n")
        (port / "link_layer").write_text("InfiniBand\n")
        (port / "rate").write_text("400 Gb/sec (4X NDR)\n")
    return root


def test_sysfs_rdma_is_preferred_and_carries_the_rate(tmp_path):
    root = make_sysfs(tmp_path, {"mlx5_0": "4: ACTIVE", "mlx5_1": "1: DOWN"})

    def no_tool(argv):
        raise AssertionError("ibv_devinfo must not run when sysfs answers")

    ports, reason = gpuinfo.rdma_ports(root, run=no_tool)
    assert reason is None
    assert [(p.device, p.state, p.rate) for p in ports] == [
        ("mlx5_0", "ACTIVE", "400 Gb/sec (4X NDR)"),
        ("mlx5_1", "DOWN", "400 Gb/sec (4X NDR)"),
    ]


def test_rdma_falls_back_to_ibv_devinfo_then_reports_why(tmp_path):
    ports, reason = gpuinfo.rdma_ports(tmp_path / "none", run=lambda argv: IBV.read_text())
    assert len(ports) == 9 and reason is None

    def missing(argv):
        raise gpuinfo.Unavailable("ibv_devinfo: not found on PATH")

    ports, reason = gpuinfo.rdma_ports(tmp_path / "none", run=missing)
    assert ports == []
    assert "ibv_devinfo: not found on PATH" in reason


def test_run_command_reports_missing_tool_and_failure():
    with pytest.raises(gpuinfo.Unavailable, match="not found on PATH"):
        gpuinfo.run_command(["titanbench-no-such-tool"])
    with pytest.raises(gpuinfo.Unavailable, match="exited 3: boom"):
        gpuinfo.run_command(["sh", "-c", "echo boom >&2; exit 3"])


def test_nvml_nvlink_query_error_is_unknown_not_absent():
    class FailingP2P(FakeNvml):
        def nvmlDeviceGetP2PStatus(self, a, b, index):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    facts = gpuinfo.read_nvml(FailingP2P([h100(0), h100(1)], p2p_nvlink=set()))
    assert facts.nvlink == [[None, None], [None, None]]


def test_topo_matrix_with_the_drivers_underlined_header():
    # Real drivers underline the header row with terminal escape codes.
    text = H100_TOPO.read_text()
    header, rest = text.split("\n", 1)
    underlined = "\t\x1b[4m" + header.strip() + "\x1b[0m\n" + rest
    assert gpuinfo.parse_topo_matrix(underlined) == gpuinfo.parse_topo_matrix(text)
    assert len(gpuinfo.parse_topo_matrix(underlined)[0]) == 8
