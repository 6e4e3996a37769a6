"""Cross-node agreement: node 0's driver is the authority, the others follow it.

Node 0 hosts a `torch.distributed.TCPStore` on its master address at the coordination port (the torchrun
master port + 1 unless `--coord-port`); the other drivers join it. Keys:

    run_id                 node 0's run id (followers adopt it)
    join/<rank>            a follower's matrix fingerprint, or "failed: <why>" if it cannot build the plan
    verdict                "ok", or why node 0 refuses the run (a follower fails on anything but ok)
    next/<k>               the k-th decision: {"config": "<model>/<config>"}, {"done": <reason>} or {"error": <why>}
    finished/<k>/<rank>    a follower's status for decision k (node 0 waits for it before the next)
    bye/<rank>             a follower read "done"; node 0 may close the store

Followers never read node 0's files: a node-local results directory is fine.
"""

import contextlib
import json
import time
from collections.abc import Callable
from datetime import timedelta

from titanbench.errors import TitanbenchError

POLL = timedelta(seconds=1)
DEFAULT_JOIN_TIMEOUT = 600.0
# After a config, how long node 0 waits for the other nodes' torchruns to end before going on.
FINISH_TIMEOUT = 120.0
ABORT_LINGER = 60.0
FAILED = "failed:"


def _torch_dist():
    import torch.distributed as dist

    return dist


class Coordinator:
    """Node 0's side (is_leader) or a follower's side of the agreement."""

    def __init__(self, addr: str, port: int, nnodes: int, node_rank: int, join_timeout: float) -> None:
        dist = _torch_dist()
        self.nnodes = nnodes
        self.node_rank = node_rank
        self.join_timeout = join_timeout
        self.is_leader = node_rank == 0
        self.decision = 0
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

    def _wait(self, key: str, timeout: float | None, stop: Callable[[], bool], what: str) -> bytes:
        """Wait for `key` in short slices, so a signal is seen within a second."""
        dist = _torch_dist()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop():
            try:
                self.store.wait([key], POLL)
                return self.store.get(key)
            except dist.DistStoreError:
                if deadline is not None and time.monotonic() > deadline:
                    raise TitanbenchError(f"timed out after {timeout:g} s waiting for {what}") from None
            except dist.DistError as error:
                raise TitanbenchError(f"lost contact with node 0's driver while waiting for {what}: {error}") from None
        raise TitanbenchError(f"stopped by a signal while waiting for {what}")

    # node 0

    def publish_run(self, run_id: str, fingerprint: str, stop: Callable[[], bool]) -> None:
        """Publish the run id, then wait for every node to join; refuse the run if any plan differs."""
        self._set("run_id", run_id)
        mismatched = []
        for rank in range(1, self.nnodes):
            theirs = self._wait(f"join/{rank}", self.join_timeout, stop, f"node {rank} to join").decode()
            if theirs.startswith(FAILED):
                mismatched.append(f"node {rank} {theirs}")
            elif theirs != fingerprint:
                mismatched.append(f"node {rank} has plan {theirs}")
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
            # A follower still starting up would find no store at all: keep it up until each one has read this.
            for rank in range(1, self.nnodes):
                self._wait(f"bye/{rank}", ABORT_LINGER, stop, f"node {rank} to read that node 0 stopped")

    def announce(self, decision: dict) -> None:
        self._set(f"next/{self.decision}", json.dumps(decision))

    def collect(self, stop: Callable[[], bool]) -> dict[int, str]:
        """The other nodes' statuses for the current decision ("unknown" for a node that did not report)."""
        statuses = {}
        for rank in range(1, self.nnodes):
            try:
                key = f"finished/{self.decision}/{rank}"
                statuses[rank] = self._wait(key, FINISH_TIMEOUT, stop, f"node {rank} to finish").decode()
            except TitanbenchError:
                statuses[rank] = "unknown"
        self.decision += 1
        return statuses

    def close(self, stop: Callable[[], bool]) -> None:
        """Keep the store up until every follower has read the last decision."""
        for rank in range(1, self.nnodes):
            with contextlib.suppress(TitanbenchError):
                self._wait(f"bye/{rank}", FINISH_TIMEOUT, stop, f"node {rank} to leave")

    # followers

    def run_id(self, stop: Callable[[], bool]) -> str:
        run_id = self._wait("run_id", self.join_timeout, stop, "node 0's run id").decode()
        if not run_id:
            verdict = self._wait("verdict", self.join_timeout, stop, "node 0's verdict").decode()
            self.leave()
            raise TitanbenchError(verdict)
        return run_id

    def fail(self, message: str) -> None:
        """This follower cannot build the plan: node 0 stops the run instead of waiting for it."""
        with contextlib.suppress(TitanbenchError):
            self._set(f"join/{self.node_rank}", f"{FAILED} {message}")
        self.leave()

    def join(self, fingerprint: str, stop: Callable[[], bool]) -> None:
        self._set(f"join/{self.node_rank}", fingerprint)
        verdict = self._wait("verdict", self.join_timeout, stop, "node 0's verdict on the plan").decode()
        if verdict != "ok":
            self.leave()
        if verdict.startswith("node 0 stopped"):
            raise TitanbenchError(verdict)
        if verdict != "ok":
            raise TitanbenchError(f"node 0 refuses this node: {verdict}: run the same command on every node")

    def next(self, stop: Callable[[], bool]) -> dict:
        """Node 0's next decision; waits as long as node 0's current config runs."""
        return json.loads(self._wait(f"next/{self.decision}", None, stop, "node 0's next decision"))

    def finished(self, status: str) -> None:
        self._set(f"finished/{self.decision}/{self.node_rank}", status)
        self.decision += 1

    def leave(self) -> None:
        """Tell node 0 this node has read its last word (best effort: node 0 may be gone)."""
        with contextlib.suppress(TitanbenchError):
            self._set(f"bye/{self.node_rank}", "1")
