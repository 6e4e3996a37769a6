"""The fault classes of docs/reliability.md, measured: two drivers on 127.0.0.1 with the stand-in trainer.

    dead follower   SIGKILL to node 1 mid-config -> node 0's verdict on the config
    dead node 0     SIGKILL to node 0 mid-config -> node 1's driver exits
    silent node 0   SIGSTOP to node 0 mid-config -> node 1's driver exits
    flood           one node, a trainer printing 100 MB without a newline: the driver's peak RSS (VmHWM)

and the processes left after each (pgrep on the scenario's folder). Prints a table.

    python bench/reliability.py [--liveness-timeout 20]
"""

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_sim import LIMIT, SPEC, Node, env_for, finish, free_port, leftovers

FLOOD = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))\nsys.stdout.flush()\n"


def drivers(work: Path, liveness: float) -> list[Node]:
    common = [sys.executable, "-c", "from titanbench.cli import main; main()", "run", "--trainer", "stand_in_trainer",
              "--torchtitan-dir", str(work), "--model", str(SPEC), "--nodes", "2", "--only", "vanilla-bf16",
              "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--coord-port", str(free_port()),
              "--grace-period", "5", "--liveness-timeout", str(liveness), "--run-id", "r"]  # fmt: skip
    env = {**env_for(hang=False), "STAND_IN_HANG": "vanilla-bf16"}
    return [Node(rank, [*common, "--node-rank", str(rank), "--results", str(work / f"node{rank}")], env)
            for rank in (0, 1)]  # fmt: skip


def mid_config(work: Path) -> None:
    log = work / "node1" / "r" / "stand_in" / "vanilla-bf16" / "node1.log"
    deadline = time.monotonic() + LIMIT
    while "step:  1" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"{log} never reached step 1"
        time.sleep(0.1)


def exited(node: Node, since: float) -> float:
    node.proc.wait(LIMIT)
    return time.monotonic() - since


def fault(kind: str, liveness: float) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix=f"fault-{kind}-") as tmp:
        work = Path(tmp)
        node0, node1 = drivers(work, liveness)
        mid_config(work)
        at = time.monotonic()
        if kind == "dead follower":
            node1.proc.kill()
            took = node0.wait_for("[1/1] stand_in/vanilla-bf16: ") - at
        elif kind == "dead node 0":
            node0.proc.kill()
            took = exited(node1, at)
        else:
            node0.proc.send_signal(signal.SIGSTOP)
            took = exited(node1, at)
            node0.proc.send_signal(signal.SIGCONT)
            node0.proc.send_signal(signal.SIGTERM)
        finish([node0, node1])
        return took, leftovers(work)


def flood() -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        work = Path(tmp)
        (work / "flood_trainer.py").write_text(FLOOD)
        env = env_for(hang=False)
        env["PYTHONPATH"] = f"{work}:{env['PYTHONPATH']}"
        argv = [sys.executable, "-c", "from titanbench.cli import main; main()", "run", "--trainer", "flood_trainer",
                "--torchtitan-dir", str(work), "--model", str(SPEC), "--nodes", "1", "--gpus-per-node", "1",
                "--tp", "1", "--only", "vanilla-bf16", "--master-port", str(free_port()),
                "--results", str(work / "results")]  # fmt: skip
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0
        while proc.poll() is None:
            status = Path(f"/proc/{proc.pid}/status")
            for line in status.read_text().splitlines() if status.exists() else []:
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
            time.sleep(0.05)
        return peak / 1024, leftovers(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--liveness-timeout", type=float, default=20.0)
    args = parser.parse_args()
    print(f"{'fault':<16} | {'figure':>10} | left", flush=True)
    for kind in ("dead follower", "dead node 0", "silent node 0"):
        took, left = fault(kind, args.liveness_timeout)
        print(f"{kind:<16} | {took:8.1f} s | {left}", flush=True)
    peak, left = flood()
    print(f"{'flood 100 MB':<16} | {peak:7.0f} MiB | {left}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
