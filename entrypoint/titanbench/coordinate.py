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
    left                   how many bye keys there are (node 0 reads them only when this count moves)
    alive/<rank>           each driver's heartbeat, a counter raised every --liveness-timeout / 5 seconds
    halt                   raised by node 0 when it gives up on the current config: followers stop theirs at once

Liveness: node 0 reads every follower's heartbeat in one request per beat; a follower reads node 0's, and
times each round trip (a stopped node 0 still accepts connections but never answers, so TCPStore's calls
would wait forever). A driver whose heartbeat has not moved for --liveness-timeout, or a node 0 that has not
answered for as long, is lost: whoever waits on it stops waiting, and a running config stops. A follower's
own calls to node 0 run on a helper thread, so that the main thread never waits past that bound.

Every wait polls a constant number of keys per poll (a count, then the keys themselves once all are there):
the messages grow linearly with the node count, and node 0's polling does not grow with it.

Followers never read node 0's files: a node-local results directory is fine.
"""

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from titanbench.errors import TitanbenchError

POLL_SECONDS = 0.25
DEFAULT_JOIN_TIMEOUT = 600.0
DEFAULT_LIVENESS_TIMEOUT = 20.0
# Heartbeats per liveness timeout: a lost node is noticed within the timeout plus one beat.
BEATS_PER_TIMEOUT = 5
# After a config, how long node 0 waits for the other nodes' torchruns to end before it stops the matrix.
FINISH_TIMEOUT = 120.0
# How long node 0, failing, stays up for a follower that has not connected yet (never past --join-timeout).
ABORT_LINGER = 60.0
# Follower statuses after which the matrix goes on; any other (interrupted, left, lost, no report) stops it.
CARRY_ON = ("ok", "failed", "timeout", "stalled")


def _torch_dist():
    import torch.distributed as dist

    return dist


def _brief(error: BaseException) -> str:
    """The first line of a store error: C++ errors may carry a stack dump after it."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_address(addr: str) -> None:
    """Node 0's address must resolve here before any torchrun: torchrun would retry it silently for minutes."""
    try:
        socket.getaddrinfo(addr, None)
    except (OSError, UnicodeError) as error:
        raise TitanbenchError(
            f"node 0's address {addr!r} (--master-addr) does not resolve on this node: "
            f"{getattr(error, 'strerror', None) or error}"
        ) from None


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


class Heartbeat(threading.Thread):
    """Raises this driver's heartbeat and reads its peers' (node 0: every follower; a follower: node 0)."""

    def __init__(self, store, node_rank: int, followers: range, timeout: float) -> None:
        super().__init__(daemon=True, name="titanbench-heartbeat")
        self.store = store
        self.node_rank = node_rank
        self.followers = followers
        self.timeout = timeout
        self.interval = timeout / BEATS_PER_TIMEOUT
        # rank -> (its last heartbeat, when this driver saw it change); a rank not seen yet is not watched.
        self.seen: dict[int, tuple[int, float]] = {}
        self.answered = time.monotonic()  # when node 0 last answered a round (followers)
        self.error: str | None = None
        self.halted = False
        self.started_beating = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        dist = _torch_dist()
        try:
            if self.node_rank == 0:
                for rank in self.followers:  # one read of all of them per beat needs the keys to exist
                    self.store.add(f"alive/{rank}", 0)
            while not self.stopping.is_set():
                self._round()
                self.answered = time.monotonic()
                self.started_beating.set()
                self.stopping.wait(self.interval)
        except dist.DistError as error:
            self.error = _brief(error)
            self.started_beating.set()

    def stop(self) -> None:
        """End the beat before the driver exits: a thread still inside a store call while the interpreter
        shuts down can abort the process (SIGABRT from the C++ store client)."""
        self.stopping.set()
        self.join(self.interval + 2 * POLL_SECONDS)

    def _round(self) -> None:
        self.store.add(f"alive/{self.node_rank}", 1)
        if self.node_rank == 0:
            keys = [f"alive/{rank}" for rank in self.followers]
            beats = list(zip(self.followers, map(int, self.store.multi_get(keys)), strict=True))
        else:
            beats = [(0, self.store.add("alive/0", 0))]
            self.halted = self.halted or self.store.add("halt", 0) > 0
        now = time.monotonic()
        for rank, beat in beats:
            if beat and self.seen.get(rank, (0, 0.0))[0] != beat:
                self.seen[rank] = (beat, now)

    def lost(self, ranks: range | list[int]) -> dict[int, str]:
        """Why each of `ranks` is lost (none: all alive, or not heard from yet)."""
        now, seen, lost = time.monotonic(), dict(self.seen), {}
        for rank in ranks:
            if rank in seen and now - seen[rank][1] > self.timeout:
                lost[rank] = (
                    f"node {rank}'s driver sent no heartbeat for {self.timeout:g} s (--liveness-timeout): "
                    "it died, is stopped or is unreachable"
                )
        if self.node_rank != 0 and 0 in ranks:
            if self.error:
                lost[0] = f"lost contact with node 0's driver: {self.error}"
            elif now - self.answered > self.timeout:
                lost[0] = (
                    f"node 0's driver has not answered for {self.timeout:g} s (--liveness-timeout): "
                    "it is stopped or unreachable"
                )
        return lost


class Coordinator:
    """Node 0's side (is_leader) or a follower's side of the agreement."""

    def __init__(
        self,
        addr: str,
        port: int,
        nnodes: int,
        node_rank: int,
        join_timeout: float,
        stop: Callable[[], bool],
        liveness_timeout: float = DEFAULT_LIVENESS_TIMEOUT,
    ) -> None:
        self.followers = range(1, nnodes)
        self.node_rank = node_rank
        self.join_timeout = join_timeout
        self.join_deadline = time.monotonic() + join_timeout
        self.is_leader = node_rank == 0
        self.decision = 0
        self.left: dict[int, str] = {}  # node 0: the followers that said bye, and why
        self.left_count = 0
        self.halted = False
        if not self.is_leader:
            _reach(addr, port, join_timeout, stop)
        self.store = self._connect(addr, port, self.is_leader)
        # Node 0's heartbeat shares its store (its calls never wait on a peer); a follower's has a connection
        # of its own, so that a call stuck on a silent node 0 does not stop the beat's bookkeeping.
        beat_store = self.store if self.is_leader else self._connect(addr, port, False)
        self.heartbeat = Heartbeat(beat_store, node_rank, self.followers, liveness_timeout)
        self.heartbeat.start()

    def _connect(self, addr: str, port: int, host: bool):
        dist = _torch_dist()
        try:
            return dist.TCPStore(addr, port, None, host, timedelta(seconds=self.join_timeout), wait_for_workers=False)
        except dist.DistError as error:
            role = "host the coordination store on" if host else "reach node 0's driver at"
            raise TitanbenchError(f"cannot {role} {addr}:{port} (--coord-port): {_brief(error)}") from None

    def _call(self, method: str, *args: Any) -> Any:
        """One store call. A follower's runs on a helper thread and is given up once node 0 counts as lost."""
        dist = _torch_dist()
        if self.is_leader:
            try:
                return getattr(self.store, method)(*args)
            except dist.DistError as error:
                raise TitanbenchError(f"the coordination store failed: {_brief(error)}") from None
        self._raise_if_lost()
        answer: list[Any] = []

        def call() -> None:
            try:
                answer.append((True, getattr(self.store, method)(*args)))
            except dist.DistError as error:
                answer.append((False, _brief(error)))

        helper = threading.Thread(target=call, daemon=True, name="titanbench-store-call")
        helper.start()
        while helper.is_alive():
            helper.join(POLL_SECONDS)
            self._raise_if_lost()
        ok, value = answer[0]
        if not ok:
            raise TitanbenchError(f"lost contact with node 0's driver: {value}")
        return value

    def _raise_if_lost(self) -> None:
        lost = self.heartbeat.lost([0])
        if lost:
            raise TitanbenchError(lost[0])

    def _set(self, key: str, value: str) -> None:
        self._call("set", key, value)

    def _wait(self, keys: list[str], seconds: float | None, stop: Callable[[], bool], what: str) -> tuple[str, str]:
        """(key, value) of the first of `keys` that is set. Polled, so that a signal is seen within a poll;
        after a signal the store is still read once, for what arrived meanwhile."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            stopped = stop()
            for key in keys:
                if self._call("check", [key]):
                    return key, self._call("get", key).decode()
            if stopped:
                raise TitanbenchError(f"stopped by a signal while waiting for {what}")
            if deadline is not None and time.monotonic() > deadline:
                raise TitanbenchError(f"timed out waiting for {what}")
            time.sleep(POLL_SECONDS)

    # node 0

    def _gone(self) -> dict[int, str]:
        """Followers that said bye or went silent, with why (the bye keys are read only when their count moves)."""
        count = int(self._call("add", "left", 0))
        if count != self.left_count:
            self.left_count = count
            for rank in self.followers:
                if rank not in self.left and self._call("check", [f"bye/{rank}"]):
                    self.left[rank] = self._call("get", f"bye/{rank}").decode()
        gone = {rank: f"left: {why}" for rank, why in self.left.items()}
        lost = self.heartbeat.lost([rank for rank in self.followers if rank not in gone])
        return {**gone, **{rank: f"lost: {why}" for rank, why in lost.items()}}

    def _all_set(self, keys: list[str]) -> bool:
        return not keys or bool(self._call("check", keys))

    def _values(self, keys: list[str]) -> list[str]:
        """The values of keys that are all set, in one request."""
        return [value.decode() for value in self._call("multi_get", keys)] if keys else []

    def publish_run(self, run_id: str, fingerprint: str, stop: Callable[[], bool]) -> None:
        """Publish the run id, then wait for every node to join; refuse the run if any plan differs or any node
        leaves or goes silent meanwhile."""
        self._set("run_id", run_id)
        keys = [f"join/{rank}" for rank in self.followers]
        while not self._all_set(keys):
            stopped = stop()
            gone = self._gone()
            if gone:
                rank, why = min(gone.items())
                raise TitanbenchError(f"node {rank} stopped: {why.removeprefix('left: ')}")
            if stopped or time.monotonic() > self.join_deadline:
                missing = [str(rank) for rank in self.followers if not self._call("check", [f"join/{rank}"])]
                if not missing:
                    break
                how = "stopped by a signal while waiting" if stopped else "timed out waiting"
                raise TitanbenchError(
                    f"{how} for node(s) {', '.join(missing)} to join (--join-timeout {self.join_timeout:g} s)"
                )
            time.sleep(POLL_SECONDS)
        plans = dict(zip(self.followers, self._values(keys), strict=True))
        mismatched = [f"node {rank} has plan {theirs}" for rank, theirs in plans.items() if theirs != fingerprint]
        if mismatched:
            verdict = f"node 0 has plan {fingerprint} but " + ", ".join(mismatched)
            self._set("verdict", verdict)
            raise TitanbenchError(
                f"nodes disagree on the plan: {verdict}: run the same command on every node "
                "(`titanbench plan --format json` on each shows what differs)"
            )
        self._set("verdict", "ok")

    def halt(self) -> None:
        """Give up on the current config: every follower stops its torchrun within a heartbeat."""
        if not self.halted:
            self.halted = True
            self._call("add", "halt", 1)

    def abort(self, message: str, stop: Callable[[], bool]) -> None:
        """Node 0 failed: every follower, whatever it waits for, stops with this message."""
        error = f"node 0 stopped: {message}"
        with contextlib.suppress(TitanbenchError):
            if not self._call("check", ["run_id"]):
                self._set("run_id", "")
            if not self._call("check", ["verdict"]):
                self._set("verdict", error)
            self.halt()
            self.announce({"error": error})
            # A follower still starting up would find no store at all: keep it up until each one has left (one
            # not heard from yet, at most until --join-timeout), or is lost.
            self._linger(stop, min(time.monotonic() + ABORT_LINGER, self.join_deadline))
        self.heartbeat.stop()

    def _linger(self, stop: Callable[[], bool], unseen_until: float) -> None:
        """Until every follower has left or is lost; one never heard from, until `unseen_until`."""
        deadline = time.monotonic() + FINISH_TIMEOUT
        while not stop() and time.monotonic() < deadline:
            gone = self._gone()
            waiting = [rank for rank in self.followers if rank not in gone]
            if not waiting or (
                time.monotonic() > unseen_until and all(rank not in self.heartbeat.seen for rank in waiting)
            ):
                return
            time.sleep(POLL_SECONDS)

    def announce(self, decision: dict) -> None:
        self._set("current", str(self.decision))
        self._set(f"next/{self.decision}", json.dumps(decision))

    def watch(self) -> str | None:
        """Why the running config must stop now (None: it may go on): node 0 lost a follower, or a follower
        lost node 0 or was told to halt."""
        if self.is_leader:
            gone = self._gone()
            return "; ".join(f"node {rank} {why}" for rank, why in sorted(gone.items())) or None
        lost = self.heartbeat.lost([0])
        if lost:
            return lost[0]
        return "node 0 stopped the config" if self.heartbeat.halted else None

    def collect(self, stop: Callable[[], bool], halt: bool = False) -> dict[int, str]:
        """Each other node's status for the current decision, or why it has none ("left: ...", "lost: ...",
        "no report: ..."). `halt`: node 0 gives up on this config (the others stop theirs at once); so does a
        follower that left or is lost."""
        if halt:
            self.halt()
        deadline = time.monotonic() + FINISH_TIMEOUT
        statuses: dict[int, str] = {}
        while True:
            stopped = stop()
            gone = {rank: why for rank, why in self._gone().items() if rank not in statuses}
            if gone:
                self.halt()
            for rank, why in gone.items():  # a node that reported before it left: its report is its status
                key = f"finished/{self.decision}/{rank}"
                statuses[rank] = self._call("get", key).decode() if self._call("check", [key]) else why
            waiting = [rank for rank in self.followers if rank not in statuses]
            keys = [f"finished/{self.decision}/{rank}" for rank in waiting]
            if self._all_set(keys):
                statuses |= dict(zip(waiting, self._values(keys), strict=True))
                break
            if stopped or time.monotonic() > deadline:
                why = "stopped by a signal while waiting" if stopped else "timed out waiting"
                for rank, key in zip(waiting, keys, strict=True):
                    reported = self._call("check", [key])
                    statuses[rank] = (
                        self._call("get", key).decode()
                        if reported
                        else f"no report: {why} for node {rank} to finish (for {FINISH_TIMEOUT:g} s)"
                    )
                break
            time.sleep(POLL_SECONDS)
        self.decision += 1
        return dict(sorted(statuses.items()))

    def close(self, stop: Callable[[], bool]) -> None:
        """Keep the store up until every follower has read the last decision (or is lost)."""
        with contextlib.suppress(TitanbenchError):
            self._linger(stop, time.monotonic())
        self.heartbeat.stop()

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
        """Node 0's next decision; waits as long as node 0's current config runs and node 0 is alive."""
        return json.loads(self._wait([f"next/{self.decision}"], None, stop, "node 0's next decision")[1])

    def is_current(self) -> bool:
        """Whether node 0 is still on the decision this node has read (it moves on when it gives up on a node)."""
        return self._call("get", "current").decode() == str(self.decision)

    def finished(self, status: str) -> None:
        self._set(f"finished/{self.decision}/{self.node_rank}", status)
        self.decision += 1

    def leave(self, reason: str) -> None:
        """Tell node 0 why this node's driver ends (best effort: node 0 may be gone)."""
        with contextlib.suppress(TitanbenchError):
            self._set(f"bye/{self.node_rank}", reason)
            self._call("add", "left", 1)
        self.heartbeat.stop()
