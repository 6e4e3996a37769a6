"""Simulate an N-node `titanbench run` on 127.0.0.1 and time the drivers' coordination as N grows.

Each simulated node is one driver, whose torchrun starts one stand-in trainer process (tests/stand_in_trainer.py:
real gloo all_reduces): `--nodes N --gpus-per-node 1 --tp 1`, every torchrun in one static rendezvous, as on a
real cluster. Three runs per node count, each checked for leftover processes:

    1. a two-config matrix; the second config hangs after step 1 and the last follower gets SIGTERM there
    2. --resume, the same hang; the last follower gets SIGKILL (it says nothing: only its silence tells)
    3. --resume without the hang: the matrix finishes, exit status 0 on every node

Figures (seconds, from the drivers' console lines, timestamped as they arrive):
    agree      the last follower sent its plan -> node 0 starts config 1
    between    the last node's verdict on config 1 -> node 0 starts config 2 (collect + announce)
    sigterm    SIGTERM to the follower -> node 0's verdict on that config
    sigkill    SIGKILL to the follower -> node 0's verdict (bounded by --liveness-timeout + a fifth of it)

    python bench/scale_sim.py --nodes 2 8 16 32 [--liveness-timeout 10]
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
SPEC = TESTS / "data" / "specs" / "stand_in.yaml"
LIMIT = 900.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    """One driver; its console lines with the monotonic time each arrived."""

    def __init__(self, rank: int, argv: list[str], env: dict[str, str]) -> None:
        self.rank = rank
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def when(self, text: str) -> float | None:
        return next((at for at, line in self.lines if text in line), None)

    def wait_for(self, text: str) -> float:
        deadline = time.monotonic() + LIMIT
        while (at := self.when(text)) is None:
            if self.proc.poll() is not None and not self.reader.is_alive():
                raise SystemExit(f"node {self.rank} ended before {text!r}:\n" + self.output())
            if time.monotonic() > deadline:
                raise SystemExit(f"node {self.rank}: no {text!r} within {LIMIT:g} s")
            time.sleep(0.05)
        return at

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def env_for(hang: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAND_IN_", "SLURM_", "PET_", "TITANBENCH_"))}
    env.pop("JOB_COMPLETION_INDEX", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "entrypoint"), str(TESTS), env.get("PYTHONPATH")]))
    env["STAND_IN_STEP_SECONDS"] = "0.02"
    if hang:
        env["STAND_IN_HANG"] = "async-bf16"
    return env


def start(nnodes: int, work: Path, extra: list[str], hang: bool, liveness: float) -> list[Node]:
    common = [sys.executable, "-c", "from titanbench.cli import main; main()", "run", "--trainer", "stand_in_trainer",
              "--torchtitan-dir", str(work), "--model", str(SPEC), "--nodes", str(nnodes), "--gpus-per-node", "1",
              "--tp", "1", "--only", "vanilla-bf16", "--only", "async-bf16", "--master-addr", "127.0.0.1",
              "--master-port", str(free_port()), "--coord-port", str(free_port()), "--grace-period", "5",
              "--liveness-timeout", str(liveness), "--join-timeout", str(LIMIT)]  # fmt: skip
    nodes = []
    for rank in range(nnodes):
        results = work / f"node{rank}"
        resume = ["--resume", str(results / "sim")] if "--resume" in extra else ["--run-id", "sim"]
        flags = [*common, "--node-rank", str(rank), "--results", str(results), *resume]
        nodes.append(Node(rank, flags, env_for(hang)))
    return nodes


def finish(nodes: list[Node]) -> list[int]:
    codes = []
    for node in nodes:
        try:
            codes.append(node.proc.wait(LIMIT))
        except subprocess.TimeoutExpired:
            node.proc.kill()
            codes.append(node.proc.wait())
        node.reader.join(10)
    return codes


def leftovers(work: Path) -> int:
    """Processes of this simulation still running (torchrun and its workers name the work folder)."""
    time.sleep(2)
    found = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True, check=False).stdout.split()
    return len([pid for pid in found if int(pid) != os.getpid()])


def hung(nodes: list[Node], work: Path, attempt: int) -> Node:
    """The last follower, once its second config has hung after step 1 in this attempt (a resumed run keeps
    the earlier attempts' logs as nodeR.log.attemptK)."""
    victim = nodes[-1]
    log = work / f"node{victim.rank}" / "sim" / "stand_in" / "async-bf16" / f"node{victim.rank}.log"
    deadline = time.monotonic() + LIMIT
    while len(list(log.parent.glob(log.name + ".attempt*"))) < attempt - 1 or "step:  1" not in (
        log.read_text() if log.exists() else ""
    ):
        if time.monotonic() > deadline:
            raise SystemExit(f"{log} never reached step 1")
        time.sleep(0.1)
    return victim


def simulate(nnodes: int, liveness: float) -> dict[str, float | int | str]:
    row: dict[str, float | int | str] = {"nodes": nnodes}
    with tempfile.TemporaryDirectory(prefix=f"scale{nnodes}-") as tmp:
        work = Path(tmp)
        # 1: a fresh matrix; SIGTERM to a follower mid-config.
        nodes = start(nnodes, work, [], hang=True, liveness=liveness)
        leader = nodes[0]
        sent = max(node.wait_for("sent to node 0") for node in nodes[1:])
        row["agree"] = leader.wait_for("[1/2] stand_in/vanilla-bf16  step") - sent
        verdicts = max(node.wait_for("[1/2] stand_in/vanilla-bf16: ") for node in nodes)
        row["between"] = leader.wait_for("[2/2] stand_in/async-bf16  step") - verdicts
        victim = hung(nodes, work, 1)
        signalled = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)
        row["sigterm"] = leader.wait_for("[2/2] stand_in/async-bf16: ") - signalled
        codes = finish(nodes)
        row["left1"] = leftovers(work)
        assert codes[0] == 1 and codes[-1] == 128 + signal.SIGTERM, (codes, leader.output())
        # 2: resume; SIGKILL to a follower mid-config.
        nodes = start(nnodes, work, ["--resume"], hang=True, liveness=liveness)
        leader = nodes[0]
        victim = hung(nodes, work, 2)
        killed = time.monotonic()
        victim.proc.kill()
        row["sigkill"] = leader.wait_for("[1/1] stand_in/async-bf16: ") - killed
        assert "lost: node" in leader.output(), leader.output()
        finish(nodes)
        row["left2"] = leftovers(work)
        # 3: resume to the end.
        nodes = start(nnodes, work, ["--resume"], hang=False, liveness=liveness)
        codes = finish(nodes)
        row["left3"] = leftovers(work)
        row["exit"] = "0" if set(codes) == {0} else ",".join(map(str, codes))
        for node, code in zip(nodes, codes, strict=True):
            if code != 0 or (node.rank == 0 and set(codes) != {0}):
                print(f"--- node {node.rank}, exit status {code}:\n{node.output()}", file=sys.stderr)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 8, 16, 32])
    parser.add_argument("--liveness-timeout", type=float, default=20.0)
    args = parser.parse_args()
    columns = ["nodes", "agree", "between", "sigterm", "sigkill", "left1", "left2", "left3", "exit"]
    print(" | ".join(f"{c:>8}" for c in columns), flush=True)
    for nnodes in args.nodes:
        row = simulate(nnodes, args.liveness_timeout)
        cells = [f"{row[c]:8.2f}" if isinstance(row[c], float) else f"{row[c]!s:>8}" for c in columns]
        print(" | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
