"""titanbench.logparse: real torchtitan logs parse to the exact windows; generated lines in the exact
upstream format round-trip every field in every variant."""

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from titanbench.logparse import (
    Evidence,
    Transport,
    Window,
    evidence,
    iter_windows,
    parse_windows,
    scan_text,
    trace_dump_steps,
    transport_problems,
)

LOGS = Path(__file__).parent / "data" / "logs"
NAN = float("nan")


def comparable(windows: list[Window]) -> list[tuple[object, ...]]:
    """Windows as tuples in which nan equals nan."""
    return [
        tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in dataclasses.astuple(w)) for w in windows
    ]


def window(step, tps, loss, gib, pct, tflops=None, mfu=None, grad_norm=None) -> Window:
    return Window(step, tps, loss, gib, pct, tflops, mfu, grad_norm)


# --- real logs ----------------------------------------------------------------------------------

PR1287 = [
    window(200, 5856.0, 6.1384, 49.66, 52.28, 339.16, 34.29),
    window(210, 5593.0, 6.0388, 49.66, 52.28, 323.92, 32.75),
    window(220, 5868.0, 6.0348, 49.66, 52.28, 339.82, 34.36),
    window(230, 5869.0, 5.9670, 49.66, 52.28, 339.88, 34.37),
    window(240, 5864.0, 5.8311, 49.66, 52.28, 339.59, 34.34),
    window(250, 5862.0, 5.8383, 49.66, 52.28, 339.48, 34.33),
]

EXPECTED = {
    "torchtitan_pr1287_profiler_dump.log": PR1287,
    "torchtitan_pr2389_duplicate_ranks.log": [
        window(4, 8629.0, 7.86874, 176.47, 98.94, 270.19, 12.01, 24.375),
        window(5, 10378.0, 6.75186, 169.13, 94.83, 324.98, 14.44, 34.0),
    ],
    "torchtitan_pr3393_grad_norm_padded_memory.log": [
        window(14, 7282.0, 3.24405, 9.46, 64.99, 0.52, 0.17, 0.8319),
        window(15, 7334.0, 3.10680, 9.46, 64.99, 0.53, 0.17, 0.8587),
        window(16, 7313.0, 3.05047, 9.46, 64.99, 0.52, 0.17, 0.5443),
        window(17, 7282.0, 3.14459, 9.46, 64.99, 0.52, 0.17, 0.5303),
        window(18, 7322.0, 3.54399, 9.46, 64.99, 0.52, 0.17, 0.7675),
        window(19, 7309.0, 3.01032, 9.46, 64.99, 0.52, 0.17, 0.7197),
        window(20, 7272.0, 2.89959, 9.46, 64.99, 0.52, 0.17, 0.9573),
        window(21, 7304.0, 3.00867, 9.46, 64.99, 0.52, 0.17, 0.6348),
    ],
    "torchtitan_pr153_wps.log": [
        window(1, 313.0, 10.8337, 27.88, 29.34),
        window(11, 1894.0, 7.2777, 34.40, 36.20),
        window(21, 2829.0, 5.5742, 34.40, 36.20),
        window(31, 2825.0, 4.7664, 34.40, 36.20),
        window(41, 2825.0, 4.2977, 34.89, 36.71),
        window(51, 2828.0, 3.9284, 34.89, 36.71),
        window(61, 2812.0, 3.7575, 34.89, 36.71),
        window(71, 2824.0, 3.6187, 34.89, 36.71),
        window(81, 2800.0, 3.4800, 34.89, 36.71),
    ],
    "torchao_pretraining_bf16.log": [
        window(1, 595.0, 12.2611, 27.22, 28.65, 34.47, 3.49),
        window(10, 6344.0, 10.4260, 30.89, 32.51, 367.39, 37.15),
        window(20, 6321.0, 8.9482, 30.89, 32.51, 366.06, 37.01),
        window(30, 6300.0, 8.1183, 30.89, 32.51, 364.89, 36.89),
        window(40, 6291.0, 7.4659, 30.89, 32.51, 364.36, 36.84),
    ],
    "awsome_distributed_training_srun_labels.log": [
        window(1990, 6785.0, 3.4370, 68.57, 86.69, None, 39.73),
    ],
    "derived_colour_glued_ranks.log": [*PR1287[:5], dataclasses.replace(PR1287[5], loss=NAN)],
    "titanbench_smoke_cpu_async_float8.log": [
        window(1, 2.0, 8.2059, 0.95, 4.05, 0.0, 0.0),
        window(5, 139.0, 6.9331, 1.02, 4.32, 0.01, 0.0),
        window(10, 134.0, 6.2270, 1.08, 4.59, 0.01, 0.0),
        window(15, 147.0, 5.5288, 1.13, 4.82, 0.01, 0.0),
        window(20, 132.0, 6.8454, 1.20, 5.10, 0.01, 0.0),
        window(25, 101.0, 4.6879, 1.25, 5.32, 0.0, 0.0),
        window(30, 130.0, 6.8477, 1.30, 5.54, 0.01, 0.0),
    ],
}


def test_every_fixture_is_checked() -> None:
    assert {path.name for path in LOGS.glob("*.log")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_log_parses_to_exact_windows(name: str) -> None:
    assert comparable(parse_windows((LOGS / name).read_text())) == comparable(EXPECTED[name])


def test_duplicates_from_other_ranks_are_seen_but_the_first_wins() -> None:
    text = (LOGS / "torchtitan_pr2389_duplicate_ranks.log").read_text()
    assert [w.step for w in iter_windows(text)] == [4, 4, 4, 5, 5, 5]
    assert [w.tps for w in iter_windows(text)] == [8629.0, 8630.0, 8629.0, 10378.0, 10379.0, 10378.0]
    glued = (LOGS / "derived_colour_glued_ranks.log").read_text()
    # Rank 1's copy of step 230 shares a physical line with rank 0's and comes second.
    assert [w.tps for w in iter_windows(glued) if w.step == 230] == [5869.0, 5000.0]


@pytest.mark.parametrize(
    ("name", "dumps"),
    [
        ("torchtitan_pr1287_profiler_dump.log", [200]),
        ("derived_colour_glued_ranks.log", [200]),
        ("torchao_pretraining_bf16.log", []),
        ("titanbench_smoke_cpu_async_float8.log", [20]),
    ],
)
def test_trace_dump_steps_of_real_logs(name: str, dumps: list[int]) -> None:
    assert trace_dump_steps((LOGS / name).read_text()) == dumps


def test_trace_dump_steps_are_sorted_unique_and_ansi_proof() -> None:
    text = (
        "[rank0]:[titan] - root - INFO - Dumping profiler traces at step 200\n"
        "[rank1]:[titan] - root - INFO - \x1b[33mDumping profiler traces at step 100\x1b[39m\n"
        "[rank0]:[titan] - root - INFO - Dumping profiler traces at step 100\n"
        "[rank0]:[titan] - root - INFO - Dumping memory snapshot at step 150\n"
    )
    assert trace_dump_steps(text) == [100, 200]


# --- evidence: the exact sentences torchtitan logs ---------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["Applied Tensor Parallelism to the model"], Evidence(async_tp=False, float8_recipe=None)),
        (["Applied Async Tensor Parallelism to the model"], Evidence(async_tp=True, float8_recipe=None)),
        (
            ["Float8 tensorwise scaled training active", "Applied Float8 tensorwise Tensor Parallelism to the model"],
            Evidence(async_tp=False, float8_recipe="tensorwise"),
        ),
        (
            [
                "Float8 tensorwise scaled training active",
                "Applied Float8 tensorwise Async Tensor Parallelism to the model",
            ],
            Evidence(async_tp=True, float8_recipe="tensorwise"),
        ),
        (
            ["Float8 training active with recipe rowwise", "Applied Async Tensor Parallelism to the model"],
            Evidence(async_tp=True, float8_recipe="rowwise"),
        ),
    ],
)
def test_evidence(lines: list[str], expected: Evidence) -> None:
    text = "\n".join(f"[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - {line}" for line in lines)
    assert evidence(text) == expected


def test_evidence_of_a_real_smoke_log() -> None:
    """The words torchtitan at the pin really logs for async TP with float8 tensorwise."""
    text = (LOGS / "titanbench_smoke_cpu_async_float8.log").read_text()
    assert evidence(text) == Evidence(async_tp=True, float8_recipe="tensorwise")


def test_evidence_of_a_log_without_those_lines() -> None:
    assert evidence((LOGS / "torchtitan_pr1287_profiler_dump.log").read_text()) == Evidence(False, None)


# --- transport: NCCL's INFO lines (NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET) ----------------------

NCCL = "[rank0]:gpu001:41:41 [0] NCCL INFO"
# Every rank also initialises the socket transport (for bootstrap), whichever network it then uses.
SOCKET_INIT = f"{NCCL} NET/Socket : Using [0]eth0:10.0.0.1<0>"
IB_INIT = f"{NCCL} NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB ; OOB eth0:10.0.0.1<0>"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [SOCKET_INIT, IB_INIT, f"{NCCL} Using network IB",
             f"{NCCL} Channel 00/0 : 0[0] -> 8[0] [send] via NET/IB/0/GDRDMA",
             f"{NCCL} Channel 01/0 : 8[0] -> 0[0] [receive] via NET/IB/1/GDRDMA"],
            Transport(("IB",), 2, 2),
        ),
        (
            [SOCKET_INIT, f"{NCCL} NET/IB : No device found.", f"{NCCL} Using network Socket",
             f"{NCCL} Channel 00/0 : 0[0] -> 8[0] [send] via NET/Socket/0"],
            Transport(("Socket",), 1, 0),
        ),
        (  # a plugin names itself; a proxied (PXN) connection shows the proxy rank in brackets
            [f"{NCCL} Using network AWS Libfabric",
             f"{NCCL} Channel 00/0 : 0[0] -> 8[0] [send] via NET/AWS Libfabric/0(3)/GDRDMA",
             f"{NCCL} Channel 01/0 : 0[0] -> 8[0] [send] via NET/AWS Libfabric/1"],
            Transport(("AWS Libfabric",), 2, 1),
        ),
        ([SOCKET_INIT, "step:  1  loss: 12.0  tps: 100"], Transport((), 0, 0)),
    ],
)  # fmt: skip
def test_transport_is_the_network_nccl_says_it_uses(lines: list[str], expected: Transport) -> None:
    assert scan_text("\n".join(lines)).transport() == expected


def test_transport_description_says_whether_every_connection_is_gpudirect() -> None:
    assert Transport(("IB",), 4, 4).describe() == "IB, GPUDirect RDMA"
    assert Transport(("IB",), 4, 3).describe() == "IB, no GPUDirect RDMA"
    assert Transport(("IB",), 0, 0).describe() == "IB"
    assert Transport((), 0, 0).describe() == "not logged"


def test_sockets_or_no_network_line_leave_the_transport_unproven_unless_sockets_are_accepted() -> None:
    transports = {0: Transport(("IB",), 2, 2), 1: Transport(("Socket",), 1, 0), 2: Transport((), 0, 0)}
    problems = transport_problems(transports)
    assert len(problems) == 2
    assert problems[0].startswith("node 1: NCCL used TCP sockets") and "--accept-socket-transport" in problems[0]
    assert problems[1].startswith("node 2's log names no NCCL network")
    assert transport_problems(transports, accept_sockets=True) == [problems[1]]
    assert transport_problems({0: Transport(("IB",), 2, 2)}) == []


# --- generated lines in the exact upstream format -----------------------------------------------

# torchtitan/tools/utils.py `Color`; `NoColor` is the same with empty strings.
COLOUR = dict(
    red="\x1b[31m",
    green="\x1b[32m",
    yellow="\x1b[33m",
    blue="\x1b[34m",
    magenta="\x1b[35m",
    cyan="\x1b[36m",
    white="\x1b[37m",
    reset="\x1b[39m",
)
NO_COLOUR = dict.fromkeys(COLOUR, "")


@dataclasses.dataclass(frozen=True)
class Record:
    step: int
    loss: float
    grad_norm: float
    gib: float
    pct: float
    tps: float
    tflops: float
    mfu: float


@dataclasses.dataclass(frozen=True)
class Variant:
    colour: bool
    grad_norm: bool  # newer torchtitan adds `grad_norm:` after the loss
    flops: bool  # older torchtitan has neither tflops nor mfu
    throughput: str  # `tps`, or `wps` in logs from before mid-2024
    prefix: str


def metrics_line(r: Record, v: Variant) -> str:
    c = COLOUR if v.colour else NO_COLOUR
    grad = f"{c['white']}grad_norm: {r.grad_norm:7.4f}  " if v.grad_norm else ""
    flops = f"  {c['cyan']}tflops: {r.tflops:,.2f}  {c['magenta']}mfu: {r.mfu:.2f}%" if v.flops else ""
    return (
        f"{v.prefix}{c['red']}step: {r.step:2}  {c['green']}loss: {r.loss:7.4f}  {grad}"
        f"{c['yellow']}memory: {r.gib:5.2f}GiB({r.pct:.2f}%)  "
        f"{c['blue']}{v.throughput}: {round(r.tps):,}{flops}{c['reset']}"
    )


def expected_window(r: Record, v: Variant) -> Window:
    """What the line says, read back through the printed precision."""
    return Window(
        step=r.step,
        tps=float(round(r.tps)),
        loss=float(f"{r.loss:.4f}"),
        memory_gib=float(f"{r.gib:.2f}"),
        memory_pct=float(f"{r.pct:.2f}"),
        tflops=float(f"{r.tflops:.2f}") if v.flops else None,
        mfu=float(f"{r.mfu:.2f}") if v.flops else None,
        grad_norm=float(f"{r.grad_norm:.4f}") if v.grad_norm else None,
    )


def finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)


def records(step: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[Record]:
    return st.builds(
        Record,
        step=step if step is not None else st.integers(1, 10**6),
        loss=st.one_of(finite(-100, 1e4), st.just(NAN)),
        grad_norm=finite(0, 1e4),
        gib=finite(0, 1e4),
        pct=finite(0, 100),
        tps=finite(0, 1e9),
        tflops=finite(0, 1e5),
        mfu=finite(0, 100),
    )


@st.composite
def prefixes(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(f"{draw(st.integers(0, 255))}: ")  # srun --label
    if draw(st.booleans()):
        parts.append(f"[rank{draw(st.integers(0, 4095))}]:")  # torchrun --role rank --tee
    if draw(st.booleans()):
        ms = draw(st.integers(0, 999))
        parts.append(f"[titan] 2025-06-13 10:{draw(st.integers(0, 59)):02d}:00,{ms:03d} - root - INFO - ")
    return "".join(parts)


variants = st.builds(
    Variant,
    colour=st.booleans(),
    grad_norm=st.booleans(),
    flops=st.booleans(),
    throughput=st.sampled_from(["tps", "wps"]),
    prefix=prefixes(),
)


@given(records(), variants)
@settings(max_examples=300)
def test_every_field_round_trips(record: Record, variant: Variant) -> None:
    line = metrics_line(record, variant)
    assert comparable(parse_windows(line)) == comparable([expected_window(record, variant)])


NOISE = [
    "[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - [GC] Peforming periodical GC collection. 0.06 seconds.",
    "[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - Dumping profiler traces at step 100",
    "[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - Training starts at step 1, total steps 100 (warmup 200)",
    "[rank3]:[titan] 2025-06-13 10:00:00,000 - root - WARNING - 6 CUDA memory allocation retries.",
    "[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - CUDA memory usage for model: 3.77GiB(2.70%)",
    "[rank1]:NCCL version 2.26.2+cuda12.6",
    "W0613 10:00:00.000000 123 torch/distributed/run.py:766] *****************************************",
    "",
]


@st.composite
def multi_rank_logs(draw: st.DrawFn) -> tuple[str, list[Window]]:
    """A log in which several ranks print each step (the first copy is the one to keep), with noise
    records between them, some records glued onto one physical line, and steps out of order."""
    variant = draw(variants)
    steps = draw(st.lists(st.integers(1, 10**5), min_size=1, max_size=12, unique=True))
    entries: list[str] = []
    expected = []
    for step in steps:
        first = draw(records(st.just(step)))
        expected.append(expected_window(first, variant))
        copies = [first, *draw(st.lists(records(st.just(step)), max_size=3))]
        for copy in copies:
            entries.append(metrics_line(copy, dataclasses.replace(variant, prefix=f"[rank{len(entries) % 8}]:")))
            entries.extend(draw(st.lists(st.sampled_from(NOISE), max_size=2)))
    # Glue: join some neighbours with nothing instead of a newline. Records all start with a prefix,
    # as torchrun's and torchtitan's records do.
    text = entries[0]
    for entry in entries[1:]:
        glue = draw(st.sampled_from(["\n", "\n", "\r\n", ""])) if entry else "\n"
        text += glue + entry
    return text, sorted(expected, key=lambda w: w.step)


@given(multi_rank_logs())
@settings(max_examples=200)
def test_first_copy_per_step_wins_through_noise_glue_and_shuffling(case: tuple[str, list[Window]]) -> None:
    text, expected = case
    assert comparable(parse_windows(text)) == comparable(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - Training starts at step 1\n",
        "[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - Dumping profiler traces at step 100\n",
        "step: 10\n",
    ],
)
def test_text_without_metric_lines_has_no_windows(text: str) -> None:
    assert parse_windows(text) == []


def test_fields_are_found_by_name_not_position() -> None:
    line = "step: 7  mfu: 1.50%  aux_loss: 9.0  tps: 12  loss: 3.0000  memory: 1.00GiB(2.00%)"
    assert parse_windows(line) == [Window(7, 12.0, 3.0, 1.0, 2.0, None, 1.5, None)]


def test_validation_lines_are_not_training_windows() -> None:
    text = (
        "[rank0]:[titan] 2025-09-01 10:00:00,000 - root - INFO - \x1b[33mvalidate step: 20  \x1b[32mloss:  2.5000  "
        "\x1b[36mmemory: 10.00GiB(10.00%)  \x1b[34mtps: 99,999\x1b[39m\n"
        "[rank0]:[titan] 2025-09-01 10:00:01,000 - root - INFO - step: 20  loss:  2.6000  "
        "memory: 10.00GiB(10.00%)  tps: 5,000  tflops: 1.00  mfu: 1.00%\n"
    )
    assert [(w.step, w.tps) for w in parse_windows(text)] == [(20, 5000.0)]


def test_fields_never_come_from_a_record_glued_after_the_metrics_line() -> None:
    text = (
        "[rank0]:2024-03-20 14:58:21,642 - root - INFO - step: 11  loss:  7.2777  memory: 34.40GiB(36.20%)  "
        "wps: 1,894[rank1]:2024-03-20 14:58:21,643 - root - INFO - custom tflops: 999.00  mfu: 99.00%\n"
    )
    assert parse_windows(text) == [Window(11, 1894.0, 7.2777, 34.40, 36.20, None, None, None)]


def test_a_copy_cut_before_its_tps_does_not_hide_the_complete_one():
    # Rank 1's step-20 record is cut by another record before `tps:`; rank 0's full copy follows.
    cut = "[rank1]:[titan] 2025-06-13 10:00:02,000 - root - INFO - step: 20  loss:  7.0000  memory: 47.79GiB(50.30%)"
    glued = cut + "[rank1]:[titan] 2025-06-13 10:00:02,001 - root - INFO - [GC] Performing periodical GC collection"
    full = (
        "[rank0]:[titan] 2025-06-13 10:00:02,002 - root - INFO - "
        "step: 20  loss:  7.0000  memory: 47.79GiB(50.30%)  tps: 6,567  tflops: 380.35  mfu: 38.46%"
    )
    (window,) = parse_windows(glued + "\n" + full + "\n")
    assert (window.step, window.tps, window.mfu) == (20, 6567, 38.46)
