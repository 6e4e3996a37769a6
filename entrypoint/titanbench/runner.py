"""The matrix loop of `titanbench run`: discover the node, agree on the plan, run each config, resume.

Node 0 is the authority: it decides which configs run (on `--resume`, those not `ok`), writes every
`result.json` and `run.json`, and renders the report at the end. Other nodes follow its decisions
through `titanbench.coordinate` and only keep their own logs (`node<R>.log`).

With `--repeat N` (N > 1) the unit of work is a trial: trial 1 of every config, then trial 2 of every
config, and so on, so that drift over the run (clocks, temperature, the cluster's other jobs) does not
favour one config. On `--resume`, only the trials not `ok` run, in the same order.
"""

import contextlib
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from titanbench import __version__, results
from titanbench.clock import run_id_now, utc_now
from titanbench.coordinate import CARRY_ON, DEFAULT_LIVENESS_TIMEOUT, check_address
from titanbench.errors import TitanbenchError
from titanbench.launch import Limits, Outcome, Progress, Stop, launch
from titanbench.logparse import LogScan, Transport, evidence_problems, scan_file, transport_problems
from titanbench.nodes import Explicit, Placement, discover_placement
from titanbench.options import RunOptions, locations_from, overrides_from, resolve_device
from titanbench.pins import stack_pins
from titanbench.plan import (
    ConfigPlan,
    Rendezvous,
    build_plan,
    check_with_torchtitan,
    matrix_fingerprint,
    topology_for,
)
from titanbench.redact import known_secrets, redact_env
from titanbench.spec import resolve_models
from titanbench.stable import UntilStable
from titanbench.stats import summarize

# Statuses that end a config for good: never rerun on --resume, never make the exit status non-zero.
DONE = ("ok", "skipped")


@dataclass(frozen=True)
class Request:
    """Everything `titanbench run` was asked, as given on this node."""

    options: RunOptions
    given: frozenset[str]  # the options set on the command line or through the environment
    run_id: str | None
    resume: Path | None
    explicit: Explicit
    coord_port: int | None
    join_timeout: float
    limits: Limits
    liveness_timeout: float = DEFAULT_LIVENESS_TIMEOUT


@dataclass(frozen=True)
class Attempt:
    """What a config's result.json says of an attempt before torchrun ends; its verdict comes after."""

    model: str
    config: str
    steps: int
    attempt: int
    log: str
    previous_logs: list[str]
    evidence_checked: bool
    fingerprint: str

    def result(
        self, status: str, reason: str, outcome: Outcome | None = None, nodes: dict[str, str] | None = None
    ) -> results.ConfigResult:
        """The result.json of this attempt; whatever torchrun's outcome holds besides its verdict is kept."""
        ended = {k: v for k, v in outcome.to_dict().items() if k not in ("status", "reason")} if outcome else {}
        heard = {} if nodes is None else {"nodes": nodes}
        return results.ConfigResult.model_validate(
            {**asdict(self), "status": status, "reason": reason, **ended, **heard}
        )


def config_key(plan: ConfigPlan) -> str:
    return f"{plan.model}/{plan.config}"


def combined_status(trials: list[results.TrialResult], repeat: int) -> tuple[results.Status, str]:
    """A config's (status, reason) over its trials: ok once all `repeat` trials are ok; else the first
    trial that failed; else `incomplete` while trials are missing; else `unverified` (all counted)."""
    if len(trials) == repeat and all(t.status == "ok" for t in trials):
        return "ok", ""
    failed = [t for t in trials if t.status not in ("ok", "unverified")]
    if failed:
        return failed[0].status, f"trial {failed[0].trial}: {failed[0].reason}"
    if len(trials) < repeat:
        return "incomplete", f"{len(trials)} of {repeat} trials run"
    return "unverified", "; ".join(f"trial {t.trial}: {t.reason}" for t in trials if t.status == "unverified")


def _say(out: TextIO, message: str) -> None:
    click.echo(message, file=out)


def _shown(value: Any) -> str:
    return "none" if value is None else repr(value)


def _resumed_options(run_dir: Path, options: RunOptions, given: frozenset[str]) -> RunOptions | None:
    """The recorded options of the run being resumed (None: no run.json here); options given again must agree."""
    recorded_run = results.read_run(run_dir)
    if recorded_run is None:
        return None
    recorded = recorded_run.request
    if recorded is None:
        raise TitanbenchError(f"--resume {run_dir}: its {results.RUN_FILE} records no request: it cannot be resumed")
    # Compared and shown as run.json has them: paths as strings, --only as a list.
    fresh, before = options.model_dump(mode="json"), recorded.model_dump(mode="json")
    disagree = [
        f"--{name.replace('_', '-')} {_shown(fresh[name])} (the run has {_shown(before[name])})"
        for name in sorted(given)
        if fresh[name] != before[name]
    ]
    if disagree:
        raise TitanbenchError(f"--resume {run_dir}: options disagree with the recorded run: " + "; ".join(disagree))
    return recorded


def planned_nodes(options: RunOptions) -> int:
    specs = resolve_models(options.model)
    overrides = overrides_from(options)
    device = resolve_device(options.device, specs)
    counts = {spec.model: topology_for(spec, overrides, device).nodes for spec in specs}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{model} {nodes}" for model, nodes in counts.items())
        raise TitanbenchError(f"the models need different node counts ({listed}): pick one --model, or set --nodes")
    return next(iter(counts.values()))


def _plans(options: RunOptions, placement: Placement, run_dir: Path) -> list[ConfigPlan]:
    locations = locations_from(options.model_copy(update={"results": run_dir.parent}), run_dir.name)
    specs = resolve_models(options.model)
    return build_plan(
        specs,
        overrides_from(options),
        Rendezvous(placement.node_rank, placement.master_addr, placement.master_port),
        locations,
        trainer=options.trainer,
        device=resolve_device(options.device, specs),
        only=options.only,
    )


def node_transports(plan: ConfigPlan, run_dir: Path, log: LogScan, trial: int | None = None) -> dict[int, Transport]:
    """The NCCL network of each node whose log node 0 can read (all of them on shared results storage)."""
    transports = {0: log.transport()}
    for rank in range(1, plan.topology.nodes):
        path = results.log_path(run_dir, plan.model, plan.config, rank, trial)
        if path.is_file():
            transports[rank] = scan_file(path).transport()
    return transports


def classify(
    outcome: Outcome, log: LogScan, plan: ConfigPlan, transports: dict[int, Transport] | None = None
) -> tuple[str, str]:
    """(status, reason) of a finished config: torchrun's outcome, then what its log shows.

    A clean exit is not enough: the log must reach the planned step (else `incomplete`; a config
    stopped by `--until-stable`, outcome `stopped`, need not: it stopped as planned), leave at
    least one window to average by the default method (else `no-data`), hold no NaN loss (else
    `invalid`), for a multi-node GPU config show NCCL's network to be RDMA (else `unverified`, unless
    sockets are accepted) and, for torchtitan's trainer, prove async TP and the float8 recipe (else
    `unverified`).
    """
    if outcome.status not in ("ok", "stopped"):
        return outcome.status, outcome.reason
    windows = log.windows()
    if not windows:
        return "failed", "torchrun exited 0 but the log holds no metrics line"
    nan_steps = [w.step for w in windows if w.loss is not None and math.isnan(w.loss)]
    if nan_steps:
        return "invalid", f"NaN loss at step {', '.join(map(str, nan_steps))}"
    if windows[-1].step < plan.steps and outcome.status != "stopped":
        return "incomplete", f"torchrun exited 0 but the log stops at step {windows[-1].step} of {plan.steps}"
    summary = summarize(windows, dump_steps=log.dumps)
    if not summary.n:
        dropped = ", ".join(f"{step} ({why})" for step, why in sorted(summary.dropped.items()))
        return "no-data", f"no window is left to average: {dropped or 'none logged after the warm-up'}"
    problems = []
    if plan.checks_transport:
        problems += transport_problems(transports or {0: log.transport()}, plan.accept_socket_transport)
    if plan.checks_torchtitan:
        problems += evidence_problems(plan.tp_type, plan.quantization, log.evidence())
    return ("unverified", "; ".join(problems)) if problems else ("ok", "")


def _manifest(torchtitan_dir: Path) -> results.Manifest:
    from titanbench.envinfo import manifest

    return results.Manifest.model_validate(manifest(str(torchtitan_dir)))


class Driver:
    def __init__(self, request: Request, env: Mapping[str, str], out: TextIO) -> None:
        self.request = request
        self.env = env
        self.out = out
        self.stop = Stop()
        self.secrets = known_secrets(env)

    def _stopped(self) -> bool:
        return bool(self.stop.signal)

    def launch(self, plan: ConfigPlan, log: Path, progress: Progress, coordinator, **hooks) -> Outcome:
        """One config's torchrun on this node: this driver's limits, signals and secrets, and the other
        nodes' liveness (a lost node stops it)."""
        return launch(
            plan,
            log,
            self.request.limits,
            self.stop,
            progress,
            secrets=self.secrets,
            environ=self.env,
            watch=coordinator.watch if coordinator is not None else None,
            **hooks,
        )

    def _signal_exit(self, message: str) -> int:
        _say(self.out, f"stopped by signal {self.stop.signal}: {message}")
        return 128 + self.stop.signal

    def run(self) -> int:
        with self.stop.installed():
            return self._run()

    def _run(self) -> int:
        request = self.request
        options = request.options.absolute()
        recorded = None
        if request.resume:
            recorded = _resumed_options(request.resume.resolve(), options, request.given)
            if recorded is None and "model" not in request.given:
                raise TitanbenchError(
                    f"--resume {request.resume}: no {results.RUN_FILE} there: nothing to resume (on a node other "
                    "than node 0, with node-local results, give the same --model and topology options as node 0)"
                )
        options = recorded or options
        topology = discover_placement(self.env, request.explicit, planned_nodes(options))
        _say(self.out, f"titanbench run: {topology.describe()}")
        check_address(topology.master_addr)
        coordinator = None
        if topology.nnodes > 1:
            from titanbench.coordinate import Coordinator

            port = request.coord_port or topology.master_port + 1
            if port > 65535:
                raise TitanbenchError(
                    f"master port {topology.master_port} leaves no port for the drivers' coordination "
                    "(master port + 1): pick a lower --master-port or pass --coord-port"
                )
            try:
                coordinator = Coordinator(
                    topology.master_addr,
                    port,
                    topology.nnodes,
                    topology.node_rank,
                    request.join_timeout,
                    self._stopped,
                    request.liveness_timeout,
                )
            except TitanbenchError as error:
                if not self.stop.signal:
                    raise
                return self._signal_exit(error.message)
        if topology.node_rank:
            return self._follow(options, topology, coordinator)
        try:
            if request.resume and recorded is None:
                # Other nodes may keep results locally and resume from their own flags (checked by fingerprint).
                raise TitanbenchError(f"--resume {request.resume}: no {results.RUN_FILE} there: nothing to resume")
            return self._lead(options, topology, coordinator)
        except TitanbenchError as error:
            if coordinator is not None:
                coordinator.abort(error.message, self._stopped)
            if not self.stop.signal:
                raise
            return self._signal_exit(error.message)

    def _run_dir(self, options: RunOptions, run_id: str | None) -> Path:
        if self.request.resume:
            return self.request.resume.resolve()
        run_id = run_id or run_id_now()
        return options.results.resolve() / run_id

    def _prepare(self, options: RunOptions, topology: Placement, run_dir: Path):
        if not options.torchtitan_dir.is_dir():
            raise TitanbenchError(f"--torchtitan-dir {options.torchtitan_dir}: no such directory")
        plans = _plans(options, topology, run_dir)
        notes = check_with_torchtitan(plans, options.torchtitan_dir, launching=True)
        for note in notes:
            _say(self.out, f"note: {note}")
        return plans, matrix_fingerprint(plans), notes

    def _lead(self, options: RunOptions, topology: Placement, coordinator) -> int:
        run_dir = self._run_dir(options, self.request.run_id)
        if self.request.resume and not run_dir.is_dir():
            raise TitanbenchError(f"--resume {self.request.resume}: no such run directory")
        self.run_dir_lock = results.hold_run_dir(run_dir)
        if not self.request.resume and results.read_run(run_dir) is not None:
            raise TitanbenchError(f"{run_dir} already holds a run: pick another --run-id or --resume it")
        plans, fingerprint, notes = self._prepare(options, topology, run_dir)
        leader = Leader(self, coordinator, topology, run_dir, plans, options, fingerprint, notes)
        if coordinator is not None:
            _say(self.out, f"run {run_dir.name}: waiting for the other {topology.nnodes - 1} node(s) to join")
            coordinator.publish_run(run_dir.name, fingerprint, self._stopped)
        return leader.loop()

    def _follow(self, options: RunOptions, topology: Placement, coordinator) -> int:
        """Follow node 0 to the end; whatever ends this driver, node 0 is told why (so it never waits for us)."""
        why = "its driver crashed"
        try:
            code = self._follow_matrix(options, topology, coordinator)
            why = f"exit status {code}"
            return code
        except TitanbenchError as error:
            why = error.message
            if not self.stop.signal:
                raise
            return self._signal_exit(error.message)
        finally:
            coordinator.leave(why)

    def _follow_matrix(self, options: RunOptions, topology: Placement, coordinator) -> int:
        leader_id = coordinator.run_id(self._stopped)
        if self.request.run_id and self.request.run_id != leader_id:
            raise TitanbenchError(f"--run-id {self.request.run_id} differs from node 0's run id {leader_id}")
        run_dir = self._run_dir(options, leader_id)
        plans, fingerprint, _ = self._prepare(options, topology, run_dir)
        _say(self.out, f"run {leader_id}: plan {fingerprint} sent to node 0, waiting for its verdict")
        coordinator.join(fingerprint, self._stopped)
        return Follower(self, coordinator, topology, run_dir, plans).loop()


class Follower:
    def __init__(
        self, driver: Driver, coordinator, topology: Placement, run_dir: Path, plans: list[ConfigPlan]
    ) -> None:
        self.driver = driver
        self.coordinator = coordinator
        self.topology = topology
        self.run_dir = run_dir
        self.plans = {config_key(p): p for p in plans}

    def loop(self) -> int:
        """Run node 0's decisions; the exit status is node 0's (which has every node's results), or 128+N."""
        driver = self.driver
        while True:
            decision = self.coordinator.next(driver._stopped)
            if "error" in decision:
                raise TitanbenchError(decision["error"])
            if "done" in decision:
                _say(driver.out, f"node 0 says done: {decision['done']} (exit status {decision['exit']})")
                return 128 + driver.stop.signal if driver.stop.signal else int(decision["exit"])
            if not self.coordinator.is_current():
                raise TitanbenchError(f"node 0 has moved past {decision['config']}: it stopped waiting for this node")
            plan = self.plans[decision["config"]]
            trial = decision.get("trial")
            log = results.log_path(self.run_dir, plan.model, plan.config, self.topology.node_rank, trial)
            results.archive_log(log)
            label = decision["config"] + (f" trial {trial}" if trial else "")
            progress = Progress(driver.out, decision["index"], decision["total"], label, plan.steps)
            outcome = driver.launch(plan, log, progress, self.coordinator)
            progress.finish(outcome.status)
            if driver.stop.signal:
                # Node 0 may be going down too (preemption signals every node): report if it still listens.
                with contextlib.suppress(TitanbenchError):
                    self.coordinator.finished(outcome.status)
                return 128 + driver.stop.signal
            self.coordinator.finished(outcome.status)


class Leader:
    def __init__(
        self,
        driver: Driver,
        coordinator,
        topology: Placement,
        run_dir: Path,
        plans: list[ConfigPlan],
        options: RunOptions,
        fingerprint: str,
        notes: list[str],
    ) -> None:
        self.driver = driver
        self.coordinator = coordinator
        self.topology = topology
        self.run_dir = run_dir
        self.plans = plans
        self.options = options
        self.fingerprint = fingerprint
        self.notes = notes
        recorded = results.read_run(run_dir)
        if recorded is not None and recorded.fingerprint != fingerprint:
            raise TitanbenchError(
                f"--resume {run_dir}: the plan rebuilt from {results.RUN_FILE} has fingerprint {fingerprint}, the "
                f"run has {recorded.fingerprint}: the specs or titanbench changed since; start a new run"
            )
        self.run = results.RunRecord(
            titanbench_version=__version__,
            run_id=run_dir.name,
            created_at=recorded.created_at if recorded and recorded.created_at else utc_now(),
            status="running",
            request=options,
            fingerprint=fingerprint,
            topology=topology,
            configs=[results.RecordedPlan.model_validate({**p.to_dict(), "env": redact_env(p.env)}) for p in plans],
            deviations={config_key(p): p.deviations for p in plans},
            notes=notes,
            timings=recorded.timings if recorded else {},
            sessions=[*(recorded.sessions if recorded else []), results.Session(started_at=utc_now(), node_rank=0)],
            pins=stack_pins(),
            environment=_manifest(options.torchtitan_dir),
        )

    def _write_run(self) -> None:
        self.run.updated_at = utc_now()
        results.write_run(self.run_dir, self.run)

    def _status(self, plan: ConfigPlan) -> results.Status | None:
        result = results.read_result(self.run_dir, plan.model, plan.config)
        return result.status if result else None

    def _todo(self) -> list[tuple[ConfigPlan, int | None]]:
        """What runs, in order: (config, trial), the trial None without --repeat; say what is kept."""
        out = self.driver.out
        runnable = [p for p in self.plans if not p.skip_reason]
        repeat = self.options.repeat
        done = {config_key(p): self._status(p) == "ok" for p in runnable}
        for plan in runnable:
            if done[config_key(plan)]:
                _say(out, f"{config_key(plan)}: ok in an earlier attempt, kept")
        if repeat == 1:
            return [(p, None) for p in runnable if not done[config_key(p)]]
        todo: list[tuple[ConfigPlan, int | None]] = []
        kept = {}
        for plan in runnable:
            result = None if done[config_key(plan)] else results.read_result(self.run_dir, plan.model, plan.config)
            kept[config_key(plan)] = {t.trial for t in result.trials if t.status == "ok"} if result else set()
        for trial in range(1, repeat + 1):
            for plan in runnable:
                if done[config_key(plan)]:
                    continue
                if trial in kept[config_key(plan)]:
                    _say(out, f"{config_key(plan)} trial {trial}: ok in an earlier attempt, kept")
                else:
                    todo.append((plan, trial))
        return todo

    def loop(self) -> int:
        driver = self.driver
        for plan in self.plans:
            if plan.skip_reason:
                self._skip(plan)
        todo = self._todo()
        self._write_run()
        stopped = ""  # why the matrix ends before its last config
        for index, (plan, trial) in enumerate(todo, start=1):
            if driver.stop.signal:
                break
            try:
                stopped = self._run_one(plan, trial, index, len(todo))
            except OSError as error:
                self._record_write_failure(error)
                raise
            if stopped:
                break
        if driver.stop.signal:
            stopped = f"signal {driver.stop.signal}"
        statuses = {config_key(p): self._status(p) for p in self.plans}
        not_ok = {k: v for k, v in statuses.items() if v not in DONE}
        code = 128 + driver.stop.signal if driver.stop.signal else 1 if not_ok else 0
        if self.coordinator is not None:
            self.coordinator.announce({"done": f"stopped: {stopped}" if stopped else "matrix finished", "exit": code})
            self.coordinator.close(driver._stopped)
        self.run.status = "interrupted" if stopped else "finished"
        self.run.sessions[-1].finished_at = utc_now()
        if stopped:
            self.run.sessions[-1].stopped = stopped
        self._write_run()
        self._report()
        if stopped:
            _say(driver.out, f"the matrix stopped: {stopped}")
        for key, status in statuses.items():
            _say(driver.out, f"  {status or 'not run':<12} {key}")
        return code

    def _record_write_failure(self, error: OSError) -> None:
        """Best effort: run.json should not keep saying `running` (with a full disk this write may fail too,
        and then the last good run.json stays, whole)."""
        self.run.status = "interrupted"
        self.run.sessions[-1].finished_at = utc_now()
        self.run.sessions[-1].stopped = f"cannot write: {error}"
        with contextlib.suppress(OSError):
            self._write_run()

    def _skip(self, plan: ConfigPlan) -> None:
        """A config that cannot run on this device: recorded as `skipped` with why, never launched."""
        previous = results.read_result(self.run_dir, plan.model, plan.config)
        record = results.ConfigResult(
            model=plan.model,
            config=plan.config,
            steps=plan.steps,
            attempt=previous.attempt if previous else 0,
            status="skipped",
            reason=f"not run on {plan.device}: {plan.skip_reason}",
            evidence_checked=False,
            fingerprint=plan.fingerprint,
        )
        results.write_result(self.run_dir, plan.model, plan.config, record)
        _say(self.driver.out, f"{config_key(plan)}: skipped: {record.reason}")

    def _run_one(self, plan: ConfigPlan, trial: int | None, index: int, total: int) -> str:
        """Run one config (one trial of it with --repeat) on every node and write its result; returns why the
        matrix must stop ("": go on)."""
        driver = self.driver
        key = config_key(plan)
        if self.coordinator is not None:
            where = {"trial": trial} if trial else {}
            self.coordinator.announce({"config": key, "index": index, "total": total, **where})
        log = results.log_path(self.run_dir, plan.model, plan.config, trial=trial)
        results.archive_log(log)
        previous = results.read_result(self.run_dir, plan.model, plan.config)
        before = previous.trial(trial) if previous and trial else previous
        attempt = Attempt(
            model=plan.model,
            config=plan.config,
            steps=plan.steps,
            attempt=(before.attempt if before else 0) + 1,
            log=log.name,
            previous_logs=results.previous_attempts(log),
            evidence_checked=plan.checks_torchtitan,
            fingerprint=plan.fingerprint,
        )
        progress = Progress(driver.out, index, total, key + (f" trial {trial}" if trial else ""), plan.steps)
        until = self.options.until_stable
        until_stable = UntilStable(until, plan.steps, plan.topology.world) if until is not None else None
        outcome = driver.launch(
            plan,
            log,
            progress,
            self.coordinator,
            on_stop=lambda signum: self._mark_interrupted(attempt, trial, signum),
            line_watch=until_stable,
        )
        halt = outcome.status == "interrupted"  # the other nodes' torchruns cannot finish without this one
        nodes = self.coordinator.collect(driver._stopped, halt) if self.coordinator is not None else {}
        scan = scan_file(log)
        transports = node_transports(plan, self.run_dir, scan, trial)
        status, reason = classify(outcome, scan, plan, transports)
        # A node that was interrupted, left or went silent cannot run the next config: the matrix stops.
        gone = ", ".join(f"node {rank} {s}" for rank, s in nodes.items() if s not in CARRY_ON)
        # Stopped early, node 0's torchrun ends first and the other nodes' end with it (failed, most likely):
        # node 0 decides, every node that carries on is as expected.
        expected = CARRY_ON if outcome.status == "stopped" else ("ok",)
        not_ok = ", ".join(f"node {rank} {s}" for rank, s in nodes.items() if s not in expected)
        if status == "ok" and not_ok:
            status, reason = ("interrupted" if gone else "failed"), not_ok
        elif not_ok and not_ok not in reason:
            # A lost node already stopped this config (launch's watch): its reason names it once.
            reason = f"{reason}; {not_ok}"
        result = attempt.result(
            status, reason, outcome, nodes={"0": outcome.status, **{str(rank): s for rank, s in nodes.items()}}
        )
        if plan.checks_transport:
            result.transport = {
                str(rank): results.NodeTransport(
                    networks=list(t.networks), gpudirect=t.gpudirect, description=t.describe()
                )
                for rank, t in transports.items()
            }
        if outcome.status == "stopped" and until_stable is not None and until_stable.decision is not None:
            result.stopped_early = results.StoppedEarly.model_validate(until_stable.decision.to_dict())
        self._write_result(plan.model, plan.config, result, trial)
        self.run.timings[key] = results.Timing(
            status=result.status,
            attempt=result.attempt,
            started_at=result.started_at,
            finished_at=result.finished_at,
            duration_s=result.duration_s,
            **({"trial": trial} if trial else {}),
        )
        self._write_run()
        # One verdict per config, after the log and the other nodes have been heard.
        verdict = status if status == "ok" else f"{status}: {reason}"
        progress.finish(verdict + (f" ({outcome.reason})" if outcome.status == "stopped" else ""))
        return gone

    def _write_result(self, model: str, config: str, result: results.ConfigResult, trial: int | None) -> None:
        """A config's result.json; with --repeat, `result` is one trial's, kept with the config's other trials."""
        if trial is None:
            results.write_result(self.run_dir, model, config, result)
            return
        previous = results.read_result(self.run_dir, model, config)
        record = results.TrialResult.model_validate({"trial": trial, **result.model_dump(exclude_unset=True)})
        trials = {t.trial: t for t in previous.trials} if previous else {}
        trials[trial] = record
        ordered = [trials[number] for number in sorted(trials)]
        status, reason = combined_status(ordered, self.options.repeat)
        combined = results.ConfigResult(
            status=status,
            reason=reason,
            model=model,
            config=config,
            steps=result.steps,
            fingerprint=result.fingerprint,
            evidence_checked=result.evidence_checked,
            repeat=self.options.repeat,
            trials=ordered,
        )
        results.write_result(self.run_dir, model, config, combined)

    def _mark_interrupted(self, attempt: "Attempt", trial: int | None, signum: int) -> None:
        """On the first sight of a signal, before torchrun's grace period: a kill may come before it ends."""
        result = attempt.result("interrupted", f"signal {signum}, stopping")
        self._write_result(attempt.model, attempt.config, result, trial)
        self.run.status = "interrupted"
        self._write_run()

    def _report(self) -> None:
        from titanbench.report import write_all

        try:
            write_all(self.run_dir)
        except TitanbenchError as error:
            _say(self.driver.out, f"warning: the report could not be written: {error.message}")


def run_matrix(request: Request, env: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """Run (or resume) the matrix on this node; returns the exit status.

    A results directory that cannot be written (disk full, read-only, not a directory) is one error
    line; every record already written stays whole (atomic writes keep the last good version)."""
    try:
        return Driver(request, os.environ if env is None else env, out or sys.stderr).run()
    except OSError as error:
        where = error.filename or "the results directory"
        raise TitanbenchError(
            f"cannot write {where}: {error.strerror or error}: the run stopped; records written so far are "
            "intact, --resume continues once the disk is writable"
        ) from None
