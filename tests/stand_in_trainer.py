"""Test double for `torchtitan.train`: run by torchrun as `-m stand_in_trainer` (with `tests/` on PYTHONPATH).

It takes torchtitan's flags (leniently: only `--training.steps` and `--job.dump_folder` matter), does real
torch.distributed work over gloo (an all_reduce every step) and prints torchtitan's metrics line on every
rank, in the exact upstream format, at step 1 and every 10 steps. It misbehaves when told to, per config
(the config id is the parent folder of `--job.dump_folder`), through comma-separated config ids in:

    STAND_IN_CRASH   exit 3 after step 5
    STAND_IN_RAISE   raise a RuntimeError after step 5, inside torchelastic's `@record` as torchtitan's
                     trainer does (torchrun then writes the worker's error.json)
    STAND_IN_HANG    stop printing (and stay alive) after step 1
    STAND_IN_HANG_LAUNCH   entries `config:N`: like STAND_IN_HANG, on that config's N-th launch only (rank 0
                     counts the launches in `stand_in_launches` in the dump folder; the other ranks then
                     wait for it in their next all_reduce)
    STAND_IN_NAN     log a NaN loss
    STAND_IN_IGNORE_SIGTERM   ignore SIGTERM (a worker slow to stop: only SIGKILL ends it)
    STAND_IN_SOCKETS   with NCCL_DEBUG=INFO, log NCCL's fall-back to TCP sockets instead of InfiniBand
    STAND_IN_LEAK    print $HF_TOKEN (into torchrun's rank logs and console) and write it into the dump folder
    STAND_IN_STEADY  log a steady tps (5000, within +-3): its 95% interval is tight from the first windows
    STAND_IN_NOISY   log a tps drawn uniformly from 2500-7500 (seeded by the step): its interval stays wide

Otherwise the tps logged is 1000 x the step over the window's seconds: it grows with the step (drift).

With NCCL_DEBUG=INFO (as the plan sets it for multi-node configs) it prints the lines NCCL prints at
initialisation that name the network and each connection through it, in NCCL's format.

STAND_IN_STEP_SECONDS (default 0.05) is the sleep per step.
"""

import math
import os
import random
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from logfactory import Metrics, metrics_message, titan_line

LOG_FREQ = 10
CRASH_AFTER_STEP = 5


def _flag(argv: list[str], name: str, default: str) -> str:
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def _told(variable: str, config: str) -> bool:
    return config in os.environ.get(variable, "").split(",")


def _hangs_this_launch(config: str, dump_folder: Path) -> bool:
    """Rank 0 only: count this launch of `config`; whether STAND_IN_HANG_LAUNCH names this one."""
    if os.environ.get("RANK", "0") != "0":
        return False
    counter = dump_folder / "stand_in_launches"
    launch = (int(counter.read_text()) if counter.exists() else 0) + 1
    dump_folder.mkdir(parents=True, exist_ok=True)
    counter.write_text(str(launch))
    return f"{config}:{launch}" in os.environ.get("STAND_IN_HANG_LAUNCH", "").split(",")


def _log(message: str) -> None:
    print(titan_line(message, datetime.now()), flush=True)


def _nccl_init_lines(config: str, rank: int, world: int) -> None:
    """What NCCL (NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET) prints as a communicator starts."""
    network, gdr = ("Socket", "") if _told("STAND_IN_SOCKETS", config) else ("IB", "/GDRDMA")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    prefix = f"{socket.gethostname()}:{os.getpid()}:{os.getpid()} [{local}] NCCL INFO"
    print(f"{prefix} NET/Socket : Using [0]lo:127.0.0.1<0>", flush=True)
    print(f"{prefix} Using network {network}", flush=True)
    peer = (rank + 1) % world
    for channel in range(2):
        print(
            f"{prefix} Channel {channel:02d}/0 : {rank}[{local}] -> {peer}[0] [send] via NET/{network}/0{gdr}",
            flush=True,
        )


def _tps(config: str, step: int, elapsed: float) -> int:
    if _told("STAND_IN_STEADY", config):
        return 5000 + (step * 37) % 7 - 3
    if _told("STAND_IN_NOISY", config):
        return round(random.Random(step).uniform(2500, 7500))
    return round(1000 * step / max(elapsed, 1e-6))


def main(argv: list[str]) -> int:
    steps = int(_flag(argv, "--training.steps", "20"))
    dump_folder = Path(_flag(argv, "--job.dump_folder", "outputs"))
    config = dump_folder.parent.name
    hang = _told("STAND_IN_HANG", config) or _hangs_this_launch(config, dump_folder)
    step_seconds = float(os.environ.get("STAND_IN_STEP_SECONDS", "0.05"))
    if _told("STAND_IN_IGNORE_SIGTERM", config):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _log(f"Starting job: stand-in trainer for {config}")
    _log(f"Inductor cache: {os.environ.get('TORCHINDUCTOR_CACHE_DIR')}")
    if _told("STAND_IN_LEAK", config):
        token = os.environ.get("HF_TOKEN", "")
        _log(f"stand-in trainer: leaking the token as told (STAND_IN_LEAK): {token}")
        dump = Path(_flag(argv, "--job.dump_folder", "outputs"))
        dump.mkdir(parents=True, exist_ok=True)
        (dump / f"leak-rank{os.environ.get('RANK', '0')}.txt").write_text(token)

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    world = dist.get_world_size()
    if os.environ.get("NCCL_DEBUG") == "INFO":
        _nccl_init_lines(config, dist.get_rank(), world)
    tensor = torch.ones(1024)
    started = time.monotonic()
    for step in range(1, steps + 1):
        dist.all_reduce(tensor)
        tensor.div_(world)
        time.sleep(step_seconds)
        if _told("STAND_IN_CRASH", config) and step == CRASH_AFTER_STEP:
            _log("stand-in trainer: crashing as told (STAND_IN_CRASH)")
            return 3
        if _told("STAND_IN_RAISE", config) and step == CRASH_AFTER_STEP:
            raise RuntimeError("stand-in trainer: Found no NVIDIA driver on your system (STAND_IN_RAISE)")
        if step == 1 or step % LOG_FREQ == 0:
            elapsed = time.monotonic() - started
            loss = math.nan if _told("STAND_IN_NAN", config) else 10.0 / step
            tps = _tps(config, step, elapsed)
            _log(metrics_message(Metrics(step=step, tps=tps, loss=loss, memory_gib=0.6, memory_pct=0.75)))
            started = time.monotonic()
        if hang and step == 1:
            while True:
                time.sleep(60)
    dist.barrier()
    dist.destroy_process_group()
    _log("Training completed")
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)(sys.argv[1:]))
