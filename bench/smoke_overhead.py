"""What titanbench adds to one smoke config: `titanbench run --only CONFIG` against the same torchrun
line run by hand (the plan's own argv and environment, the same warm compile cache).

    .venv-smoke/bin/python bench/smoke_overhead.py --torchtitan-dir .cache/torchtitan [--config vanilla-bf16]

Run it on an otherwise idle machine; it prints both wall times and their difference. Both runs use
`--cache-dir` CACHE, so run it twice and read the second (warm) result.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(argv: list[str], **kwargs) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torchtitan-dir", type=Path, required=True)
    parser.add_argument("--config", default="vanilla-bf16")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "titanbench-overhead-cache")
    args = parser.parse_args()
    results = Path(tempfile.mkdtemp(prefix="titanbench-overhead-"))
    common = ["--model", "smoke", "--device", "cpu", "--torchtitan-dir", str(args.torchtitan_dir)]
    common += ["--results", str(results), "--cache-dir", str(args.cache_dir)]
    plan = json.loads(
        subprocess.run(
            [
                BIN / "titanbench",
                "plan",
                *common,
                "--run-id",
                "bare",
                "--master-port",
                str(free_port()),
                "--format",
                "json",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    config = next(c for c in plan["configs"] if c["config"] == args.config)
    argv = [sys.executable, "-m", "torch.distributed.run", *config["launcher_argv"][1:]]
    for directory in config["make_dirs"]:
        Path(directory).mkdir(parents=True, exist_ok=True)
    bare = timed(argv, cwd=config["workdir"], env={**os.environ, **config["env"]})
    port = ["--master-port", str(free_port())]
    through = timed([BIN / "titanbench", "run", *common, *port, "--run-id", "titanbench", "--only", args.config])
    print(
        f"{args.config}: plain torchrun {bare:.1f} s, titanbench run {through:.1f} s, overhead {through - bare:+.1f} s"
    )


if __name__ == "__main__":
    main()
