"""Cross-node agreement: node 0's driver is the authority, the others follow it.

Node 0 hosts a `torch.distributed.TCPStore` on its master address at the coordination port (the torchrun
master port + 1 unless `--coord-port`); the other drivers join it. Keys:

    run_id                 node 0's run id (followers adopt it); empty if node 0 stopped before it had one
    join/<rank>            a follower's matrix fingerprint
    verdict                "ok", or why node 0 refuses the run (a follower fails on anything but ok)
    current                k while node 0 is on decision k: a follower never starts a config node 0 has left
    next/<k>               the k-th decision: {"config": "<model>/<config>", ...}, {"done": <why>, "exit": <status>}
                           or {"error": <why>}
    finished/<k>/<rank>    a follower's status for decision k (node 0 waits for it before the next)
    bye/<rank>             why a follower's driver ended, written on its way out whatever the cause: node 0 stops
                           waiting for that node at once

Followers never read node 0's files: a node-local results directory is fine.
"""

import contextlib
import json
import socket
import time
from collections.abc import Callable
from datetime import timedelta

from titanbench.errors import TitanbenchError

POLL_SECONDS = 0.25
DEFAULT_JOIN_TIMEOUT = 600.0
# After a config, how long node 0 waits for a silent node's torchrun to end before it stops the matrix.
FINISH_TIMEOUT = 120.0
ABORT_LINGER = 60.0
# Follower statuses after which the matrix goes on; any other (interrupted, left, no report) stops it.
CARRY_ON = ("ok", "failed", "timeout", "stalled")


def _torch_dist():
    import torch.distributed as dist

    return dist


def _rank(key: str) -> int:
    return int(key.rsplit("/", 1)[1])


def _reach(addr: str, port: int, seconds: float, stop: Callable[[], bool]) -> None:
    """Wait until node 0's store listens: TCPStore's own connect would not see a signal until it times out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((addr, port), timeout=POLL_SECONDS).close()
            return
        except OSError as error:
            if stop():
                raise TitanbenchError(
                    f"stopped by a signal while waiting for node 0's driver at {addr}:{port}"
                ) from None
            if time.monotonic() > deadline:
                raise TitanbenchError(
                    f"cannot reach node 0's driver at {addr}:{port} (--coord-port) within --join-timeout "
                    f"{seconds:g} s: {error}"
                ) from None
        time.sleep(POLL_SECONDS)


class Coordinator:
    """Node 0's side (is_leader) or a follower's side of the agreement."""

    def __init__(
        self, addr: str, port: int, nnodes: int, node_rank: int, join_timeout: float, stop: Callable[[], bool]
    ) -> None:
        dist = _torch_dist()
        self.followers = range(1, nnodes)
        self.node_rank = node_rank
        self.join_timeout = join_timeout
        self.is_leader = node_rank == 0
        self.decision = 0
        if not self.is_leader:
            _reach(addr, port, join_timeout, stop)
        try:
            self.store = dist.TCPStore(
                addr,
                port,
                None,
                self.is_leader,
                timedelta(seconds=join_timeout),
                wait_for_workers=False,
            )
        except dist.DistError as error:
            role = "host the coordination store on" if self.is_leader else "reach node 0's driver at"
            raise TitanbenchError(f"cannot {role} {addr}:{port} (--coord-port): {error}") from None

    def _set(self, key: str, value: str) -> None:
        dist = _torch_dist()
        try:
            self.store.set(key, value)
        except dist.DistError as error:
            raise TitanbenchError(f"lost contact with node 0's driver: {error}") from None

    def _wait(self, keys: list[str], seconds: float | None, stop: Callable[[], bool], what: str) -> tuple[str, str]:
        """(key, value) of the first of `keys` that is set. Polled, so that a signal is seen within a poll;
        after a signal the store is still read once, for what arrived meanwhile."""
        return self._wait_until(keys, None if seconds is None else time.monotonic() + seconds, stop, what)

    def _wait_until(
        self, keys: list[str], deadline: float | None, stop: Callable[[], bool], what: str
    ) -> tuple[str, str]:
        dist = _torch_dist()
        while True:
            stopped = stop()
            try:
                for key in keys:
                    if self.store.check([key]):
                        return key, self.store.get(key).decode()
            except dist.DistError as error:
                raise TitanbenchError(f"lost contact with node 0's driver while waiting for {what}: {error}") from None
            if stopped:
                raise TitanbenchError(f"stopped by a signal while waiting for {what}")
            if deadline is not None and time.monotonic() > deadline:
                raise TitanbenchError(f"timed out waiting for {what}")
            time.sleep(POLL_SECONDS)

    # node 0

    def publish_run(self, run_id: str, fingerprint: str, stop: Callable[[], bool]) -> None:
        """Publish the run id, then wait for every node to join; refuse the run if any plan differs or any node
        leaves meanwhile."""
        self._set("run_id", run_id)
        deadline = time.monotonic() + self.join_timeout
        plans: dict[int, str] = {}
        while len(plans) < len(self.followers):
            waiting = [f"join/{rank}" for rank in self.followers if rank not in plans]
            key, value = self._wait_until(
                [f"bye/{rank}" for rank in self.followers] + waiting,
                deadline,
                stop,
                f"node(s) {', '.join(w.removeprefix('join/') for w in waiting)} to join "
                f"(--join-timeout {self.join_timeout:g} s)",
            )
            if key.startswith("bye/"):
                raise TitanbenchError(f"node {_rank(key)} stopped: {value}")
            plans[_rank(key)] = value
        mismatched = [f"node {rank} has plan {theirs}" for rank, theirs in plans.items() if theirs != fingerprint]
        if mismatched:
            verdict = f"node 0 has plan {fingerprint} but " + ", ".join(mismatched)
            self._set("verdict", verdict)
            raise TitanbenchError(
                f"nodes disagree on the plan: {verdict}: run the same command on every node "
                "(`titanbench plan --format json` on each shows what differs)"
            )
        self._set("verdict", "ok")

    def abort(self, message: str, stop: Callable[[], bool]) -> None:
        """Node 0 failed: every follower, whatever it waits for, stops with this message."""
        error = f"node 0 stopped: {message}"
        with contextlib.suppress(TitanbenchError):
            if not self.store.check(["run_id"]):
                self._set("run_id", "")
            if not self.store.check(["verdict"]):
                self._set("verdict", error)
            self.announce({"error": error})
            # A follower still starting up would find no store at all: keep it up until each one has left.
            for rank in self.followers:
                self._wait([f"bye/{rank}"], ABORT_LINGER, stop, f"node {rank} to read that node 0 stopped")

    def announce(self, decision: dict) -> None:
        self._set("current", str(self.decision))
        self._set(f"next/{self.decision}", json.dumps(decision))

    def collect(self, stop: Callable[[], bool]) -> dict[int, str]:
        """Each other node's status for the current decision, or why it has none ("left: ...", "no report: ...")."""
        statuses = {}
        for rank in self.followers:
            try:
                key, value = self._wait(
                    [f"finished/{self.decision}/{rank}", f"bye/{rank}"],
                    FINISH_TIMEOUT,
                    stop,
                    f"node {rank} to finish (for {FINISH_TIMEOUT:g} s)",
                )
                statuses[rank] = f"left: {value}" if key.startswith("bye/") else value
            except TitanbenchError as error:
                statuses[rank] = f"no report: {error.message}"
        self.decision += 1
        return statuses

    def close(self, stop: Callable[[], bool]) -> None:
        """Keep the store up until every follower has read the last decision."""
        for rank in self.followers:
            with contextlib.suppress(TitanbenchError):
                self._wait([f"bye/{rank}"], FINISH_TIMEOUT, stop, f"node {rank} to leave")

    # followers

    def run_id(self, stop: Callable[[], bool]) -> str:
        _, run_id = self._wait(
            ["run_id"], self.join_timeout, stop, f"node 0's run id (--join-timeout {self.join_timeout:g} s)"
        )
        if not run_id:
            raise TitanbenchError(self._wait(["verdict"], self.join_timeout, stop, "node 0's verdict")[1])
        return run_id

    def join(self, fingerprint: str, stop: Callable[[], bool]) -> None:
        self._set(f"join/{self.node_rank}", fingerprint)
        _, verdict = self._wait(["verdict"], self.join_timeout, stop, "node 0's verdict on the plan")
        if verdict.startswith("node 0 stopped"):
            raise TitanbenchError(verdict)
        if verdict != "ok":
            raise TitanbenchError(f"node 0 refuses this node: {verdict}: run the same command on every node")

    def next(self, stop: Callable[[], bool]) -> dict:
        """Node 0's next decision; waits as long as node 0's current config runs."""
        return json.loads(self._wait([f"next/{self.decision}"], None, stop, "node 0's next decision")[1])

    def is_current(self) -> bool:
        """Whether node 0 is still on the decision this node has read (it moves on when it gives up on a node)."""
        dist = _torch_dist()
        try:
            return self.store.get("current").decode() == str(self.decision)
        except dist.DistError as error:
            raise TitanbenchError(f"lost contact with node 0's driver: {error}") from None

    def finished(self, status: str) -> None:
        self._set(f"finished/{self.decision}/{self.node_rank}", status)
        self.decision += 1

    def leave(self, reason: str) -> None:
        """Tell node 0 why this node's driver ends (best effort: node 0 may be gone)."""
        with contextlib.suppress(TitanbenchError):
            self._set(f"bye/{self.node_rank}", reason)
