"""`titanbench parse` against a plain per-line regex loop over the same file: time and peak memory.

    .venv/bin/python bench/parse_speed.py [--lines 1000000]

Two log shapes: every line a metrics record (torchrun's `[rankN]:` prefix, 8 ranks per step), and a
realistic large log (NCCL INFO lines with 20 metrics lines among them). Each parse runs in a fresh
process so peak RSS is its own. Targets (issue 11): memory O(windows), time <= 3x the plain loop.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = (
    "[rank{rank}]:[titan] 2025-06-13 10:00:00,000 - root - INFO - step: {step:2}  loss:  8.1210  "
    "memory: 47.79GiB(50.30%)  tps: 6,567  tflops: 380.35  mfu: 38.46%\n"
)
NCCL = "[rank{rank}]:node001:1234:1234 [{rank}] NCCL INFO Channel 03/0 : 3[3] -> 4[4] via P2P/CUMEM/read\n"

PLAIN = """
import re, sys
step = re.compile(r"step:\\s*(\\d+)\\s+loss:\\s*\\S+\\s+memory:\\s*\\S+\\s+tps:\\s*([\\d,]+)")
found = {}
with open(sys.argv[1], encoding="utf-8", errors="replace") as lines:
    for line in lines:
        match = step.search(line)
        if match:
            found.setdefault(int(match[1]), match[2])
"""
TITANBENCH = """
import sys
from titanbench.stats import summarize_file
summarize_file(sys.argv[1])
"""
PEAK = "import resource; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def write_logs(folder: Path, lines: int) -> dict[str, Path]:
    all_metrics = folder / "all_metrics.log"
    with all_metrics.open("w") as log:
        for index in range(lines):
            log.write(METRICS.format(rank=index % 8, step=index // 8 + 1))
    mostly_nccl = folder / "mostly_nccl.log"
    every = lines // 20
    with mostly_nccl.open("w") as log:
        for index in range(lines):
            template = METRICS if index % every == 0 else NCCL
            log.write(template.format(rank=index % 8, step=index // every * 10 + 1))
    return {"every line a metrics record": all_metrics, "NCCL INFO + 20 metrics lines": mostly_nccl}


def measure(code: str, path: Path) -> tuple[float, float]:
    """(seconds, peak MiB) of `python -c code path` in a fresh process."""
    wrapper = (
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}, {str(path)!r}], check=True); {PEAK}"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True, text=True)
    return time.monotonic() - started, int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for shape, path in write_logs(Path(folder), args.lines).items():
            plain_s, plain_mib = measure(PLAIN, path)
            ours_s, ours_mib = measure(TITANBENCH, path)
            print(
                f"{shape} ({args.lines:,} lines, {path.stat().st_size / 2**20:.0f} MiB): "
                f"plain loop {plain_s:.1f} s / {plain_mib:.0f} MiB, titanbench {ours_s:.1f} s / {ours_mib:.0f} MiB "
                f"({ours_s / plain_s:.1f}x the time)"
            )


if __name__ == "__main__":
    main()
