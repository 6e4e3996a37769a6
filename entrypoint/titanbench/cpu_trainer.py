"""Run torchtitan's own trainer, `torchtitan.train`, on the CPU (the smoke matrix without a GPU).

torchrun starts this module (`-m titanbench.cpu_trainer <torchtitan flags>`) instead of
`torchtitan.train`. At the pinned commit torchtitan picks its device once, when it is first
imported (`torchtitan.tools.utils`), and falls back to CUDA when torch sees no accelerator; other
modules bind that choice by name during the same import. So torch's device probe answers "cpu"
only while torchtitan is first imported, and then `torchtitan.train` runs as `__main__`, with the
flags unchanged: its own main block, config parser, logging and failure handling. Everything
follows from the device: gloo, CPU meshes, FSDP2 and DTensor over gloo.

What some configs need beyond that is a named substitution (`SUBSTITUTIONS`), chosen per config
by the spec and passed in $TITANBENCH_CPU_SUBSTITUTIONS; each is a deviation the plan and every
report list. None of this module runs on CUDA: the plan uses it only for `--device cpu`.
"""

import logging
import os
import platform
import resource
import runpy
import sys
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from titanbench import settings

SUBSTITUTIONS_ENV = settings.CPU_SUBSTITUTIONS

# name -> what it replaces (shown as the deviation).
SUBSTITUTIONS = {
    "symm-mem-reference-ops": (
        "async TP's fused symmetric-memory ops (symm_mem::fused_all_gather_matmul and the three others) run "
        "torch's own non-overlapped reference implementations on CPU: same math, no overlap"
    ),
    "float8-all-gather-as-uint8": (
        "torchao's float8 all-gather moves the same bytes viewed as uint8 (gloo has no float8 dtypes)"
    ),
    "float8-capability-gate": (
        "torchtitan's SM89 check for float8 with compile is passed on CPU (CPU _scaled_mm handles tensorwise scales)"
    ),
}

FUSED_SYMM_MEM_OPS = (
    "fused_all_gather_matmul",
    "fused_all_gather_scaled_matmul",
    "fused_matmul_reduce_scatter",
    "fused_scaled_matmul_reduce_scatter",
)


def _memory_stats(_device: Any = None) -> dict[str, int]:
    # The process's peak resident set (Linux reports KiB); it never resets.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"active_bytes.all.peak": peak, "reserved_bytes.all.peak": peak, "num_alloc_retries": 0, "num_ooms": 0}


def cpu_device_module() -> SimpleNamespace:
    """What torchtitan calls on its device module, answered for the host."""
    import torch

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return SimpleNamespace(
        set_device=lambda _device: None,
        current_device=lambda: 0,
        device_count=lambda: 1,
        is_available=lambda: True,
        get_device_name=lambda _device=None: f"CPU {platform.machine()}",
        get_device_properties=lambda _device=None: SimpleNamespace(total_memory=total),
        memory_stats=_memory_stats,
        reset_peak_memory_stats=lambda _device=None: None,
        empty_cache=lambda: None,
        synchronize=torch.cpu.synchronize,
    )


@contextmanager
def torch_sees_cpu():
    """torch's device probe answers "cpu" inside the block, and is restored after it."""
    import torch._utils

    probe, lookup = torch._utils._get_available_device_type, torch._utils._get_device_module
    module = cpu_device_module()
    torch._utils._get_available_device_type = lambda: "cpu"
    torch._utils._get_device_module = lambda device_type=None: (  # type: ignore[assignment]
        module if device_type in (None, "cpu") else lookup(device_type)
    )
    try:
        yield
    finally:
        torch._utils._get_available_device_type, torch._utils._get_device_module = probe, lookup


def _symm_mem_reference_ops() -> None:
    import torch
    from torch.distributed import _symmetric_memory as symm_mem

    for name in FUSED_SYMM_MEM_OPS:
        torch.library.impl(symm_mem.lib, name, "CPU")(getattr(symm_mem, f"_{name}_fallback"))


def _float8_all_gather_as_uint8() -> None:
    import torch
    from torchao.float8.float8_ops import FLOAT8_OPS_TABLE

    ops = [op for op in FLOAT8_OPS_TABLE if op.name().endswith("all_gather_into_tensor")]
    for op in ops:
        gather_float8 = FLOAT8_OPS_TABLE[op]

        def gather_bytes(aten_op, args, kwargs=None, _gather_float8=gather_float8):
            def as_uint8(data, *rest, **more):
                gathered = aten_op(data.view(torch.uint8), *rest, **more)
                return torch.ops._c10d_functional.wait_tensor(gathered).view(data.dtype)

            return _gather_float8(as_uint8, args, kwargs)

        FLOAT8_OPS_TABLE[op] = gather_bytes


def _float8_capability_gate() -> None:
    from torchtitan.components.quantization import float8

    float8.has_cuda_capability = lambda major, minor: True


APPLY = {
    "symm-mem-reference-ops": _symm_mem_reference_ops,
    "float8-all-gather-as-uint8": _float8_all_gather_as_uint8,
    "float8-capability-gate": _float8_capability_gate,
}


def requested_substitutions(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    names = [name for name in environ.get(SUBSTITUTIONS_ENV, "").split(",") if name]
    unknown = [name for name in names if name not in SUBSTITUTIONS]
    if unknown:
        raise SystemExit(
            f"titanbench.cpu_trainer: unknown substitution(s) {', '.join(unknown)} in ${SUBSTITUTIONS_ENV}"
        )
    return names


@contextmanager
def root_handlers_kept():
    """An early `logging.info` (torchao's import makes one) would give the root logger a default handler,
    and every line torchtitan logs would then print twice: the root logger is left as it was."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        yield
    finally:
        root.handlers[:] = handlers


def main() -> None:
    names = requested_substitutions()
    with root_handlers_kept():
        with torch_sees_cpu():
            import torchtitan  # noqa: F401  (imports every component: they bind the device choice, cpu)
        for name in names:
            APPLY[name]()
    sys.argv[0] = "torchtitan.train"
    runpy.run_module("torchtitan.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
