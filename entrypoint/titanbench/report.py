"""The report: a run directory's measured numbers next to the published table.

`collect` turns a results directory (see `titanbench.results`) into one `ReportDocument`; the markdown
and the charts are rendered from that document alone, and `results.json` is its JSON form, so it can be
re-rendered later (`ReportDocument.model_validate`).
Works from logs alone: `run.json` and `result.json` add plans, deviations, statuses and the
environment when present. No torch, matplotlib or docker here (the chart imports matplotlib lazily;
the intervals import scipy's Student-t quantile only when one is computed).
"""

import contextlib
import json
import math
import re
import statistics
from collections import Counter
from pathlib import Path

from titanbench import intervals, logparse, results, settings, stats
from titanbench.atomic import write_bytes, write_text
from titanbench.document import (
    MISSING,
    NO_DATA,
    Averaging,
    ConfigEntry,
    EnvironmentRow,
    EvidenceEntry,
    IntervalEntry,
    ModelEntry,
    PinCheck,
    ReportDocument,
    StoppedEarlyEntry,
    SummaryEntry,
    TopologySource,
    TrialEntry,
    UntilStableEntry,
)
from titanbench.errors import TitanbenchError
from titanbench.pins import stack_pins
from titanbench.spec import (
    POWER_TOLERANCE_W,
    QUANTIZATION_LABELS,
    QUANTIZATIONS,
    TP_LABELS,
    MatrixSpec,
    Topology,
    resolve_models,
)

RESULTS_JSON = "results.json"
RESULTS_MD = "RESULTS.md"
RESULTS_PNG = "RESULTS.png"
RESULTS_STEPS_PNG = "RESULTS-steps.png"
PUBLISHED_SOURCE = (
    "PyTorch team, June 2025: torchtitan `benchmarks/asyncTP_llama3_h100_2025-06_torchtitan.md`, merged in "
    "2887250 (2025-06-16, PR 1299, two commits after the pinned torchtitan); commands, step counts and the "
    "table shape below from the PR's draft commits (5ecb74e, 8b6770a)"
)
# Statuses whose numbers count (an unverified run keeps its number, marked as such).
COUNTED = ("ok", "unverified")
_CONFIG_ID = re.compile(rf"^(vanilla|async)-({'|'.join(QUANTIZATIONS)})$")
_GPU_MODEL = re.compile(r"\b([A-Z]+\d+[A-Za-z]*)\b")
_GBPS = re.compile(r"(\d+(?:\.\d+)?)\s*Gb")
_GB = re.compile(r"(\d+(?:\.\d+)?)\s*GB\b")
SAVED_METHOD = (
    "GPU-hours saved by `--until-stable` are an estimate: (planned steps - the last step logged) x the seconds "
    "per step the driver measured over the averaged windows x the run's GPUs (CPU processes on CPU); the steps "
    "run between the last metrics line and the stop, and the time torchrun takes to stop, are not counted"
)
# NVML's total memory of a GPU sold as N GB is a few GiB under N (80 GB H100: 79.6 GiB): closer than this is the same.
GPU_MEMORY_TOLERANCE_GIB = 6


# ---- collect ------------------------------------------------------------------------------------


def _labels(
    config_id: str, plan: results.RecordedPlan | None, spec: MatrixSpec | None
) -> tuple[str | None, str | None]:
    if plan and plan.tp_type in TP_LABELS and plan.quantization in QUANTIZATION_LABELS:
        return plan.tp_type, plan.quantization
    if spec and any(c.id == config_id for c in spec.configs):
        config = spec.config(config_id)
        return config.tp_type, config.quantization
    match = _CONFIG_ID.match(config_id)
    return (match[1], match[2]) if match else (None, None)


def _result_detail(result: results.AttemptRecord) -> str | None:
    if result.reason:
        return result.reason
    code = result.returncode if result.returncode is not None else result.exit_code
    return None if code is None else f"exit code {code}"


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _config_entry(
    run_dir: Path,
    model: str,
    config_id: str,
    *,
    plan: results.RecordedPlan | None,
    spec: MatrixSpec | None,
    present: bool,
    warmup_steps: int,
    profile_freq: int | None,
) -> ConfigEntry:
    tp_type, quantization = _labels(config_id, plan, spec)
    published = plan.published_tps if plan else None
    if published is None and spec and any(c.id == config_id for c in spec.configs):
        published = spec.config(config_id).published_tps
    entry = ConfigEntry(
        config=config_id,
        tp_type=tp_type,
        quantization=quantization,
        published_tps=published,
        planned=plan is not None,
        deviations=plan.deviations if plan else None,
        trainer=plan.trainer if plan else None,
    )
    if not present:
        entry.detail = "no results folder for this config"
        return entry
    try:
        result = results.read_result(run_dir, model, config_id)
    except TitanbenchError as error:
        entry.status, entry.detail = NO_DATA, error.message
        return entry
    entry.evidence_checked = result.evidence_checked if result else None
    # Repeated configs: the network of the latest trial that logged one.
    transport = result and (result.transport or next((t.transport for t in reversed(result.trials) if t.transport), {}))
    if transport:
        entry.transport = {rank: node.description for rank, node in transport.items()}
    trial_logs = results.trial_logs(run_dir, model, config_id)
    if result.trials if result else trial_logs:
        _add_trials(entry, run_dir, model, result, trial_logs, warmup_steps=warmup_steps, profile_freq=profile_freq)
        return entry
    log = results.log_path(run_dir, model, config_id)
    summary, status, detail = _judge_log(log, result, entry, warmup_steps, profile_freq)
    entry.stopped_early = _stopped_early(result, summary)
    if entry.stopped_early is not None:
        entry.gpu_hours_saved = entry.stopped_early.gpu_hours_saved
    _add_log_facts(entry, [summary] if summary else [])
    entry.status, entry.detail = status or MISSING, detail
    if status in COUNTED and summary is not None and summary.avg_tps is not None:
        entry.measured_tps = summary.avg_tps
        if published:
            entry.ratio = summary.avg_tps / published
        _add_interval(entry, summary)
    return entry


def _stopped_early(record: results.AttemptRecord | None, summary: stats.Summary | None) -> StoppedEarlyEntry | None:
    """A run `--until-stable` stopped, with the GPU-hours that saved (an estimate: SAVED_METHOD)."""
    stopped = record.stopped_early if record else None
    if record is None or stopped is None:
        return None
    logged = summary.windows[-1].step if summary and summary.windows else record.last_step
    last = max(logged or 0, stopped.at_step)
    saved = None
    if stopped.step_s is not None and stopped.gpus is not None:
        saved = max(stopped.planned_steps - last, 0) * stopped.step_s * stopped.gpus / 3600
    return StoppedEarlyEntry(
        at_step=stopped.at_step,
        planned_steps=stopped.planned_steps,
        half_width_pct=stopped.half_width_pct,
        last_step=last,
        step_s=stopped.step_s,
        gpus=stopped.gpus,
        gpu_hours_saved=saved,
    )


def _judge_log(
    log: Path,
    record: results.AttemptRecord | None,
    entry: ConfigEntry,
    warmup_steps: int,
    profile_freq: int | None,
) -> tuple[stats.Summary | None, str | None, str | None]:
    """(summary, status, detail) of one run's log: the record's verdict, else what the log itself shows."""
    summary: stats.Summary | None = None
    log_problem: str | None = None
    try:
        summary = stats.summarize_file(log, warmup_steps=warmup_steps, profile_freq=profile_freq)
    except TitanbenchError as error:
        log_problem = error.message
    else:
        if not summary.n:
            log_problem = "no window left after the warm-up and profiler windows"
    status: str | None = record.status if record else None
    detail = _result_detail(record) if record else None
    if summary is not None:
        found = summary.evidence or logparse.evidence(log.read_text(errors="replace"))
        entry.evidence = EvidenceEntry(async_tp=found.async_tp, float8_recipe=found.float8_recipe)
        if status is None:
            # Logs alone: the log itself must show what the config claims (the runner checks this too).
            detail = "; ".join(logparse.evidence_problems(entry.tp_type, entry.quantization, found)) or None
            status = "unverified" if detail else "ok"
    if status in (None, *COUNTED) and log_problem:
        status, detail = NO_DATA, log_problem
    return summary, status, detail


def _add_log_facts(entry: ConfigEntry, summaries: list[stats.Summary]) -> None:
    """The step chart's windows (the last summary's), MFU over every used window, the peak memory of all."""
    if not summaries:
        return
    entry.summary = SummaryEntry.model_validate(summaries[-1].to_dict())
    used = [w for s in summaries for w in s.windows if w.step in set(s.used_steps)]
    entry.mfu = _mean([w.mfu for w in used if w.mfu is not None])
    memory = [w.memory_gib for s in summaries for w in s.windows if w.memory_gib is not None]
    entry.peak_memory_gib = max(memory) if memory else None


def _add_trials(
    entry: ConfigEntry,
    run_dir: Path,
    model: str,
    result: results.ConfigResult | None,
    logs: dict[int, Path],
    *,
    warmup_steps: int,
    profile_freq: int | None,
) -> None:
    """A config run several times: each trial averaged on its own, then combined over the trial averages."""
    records = {t.trial: t for t in result.trials} if result else {}
    folder = results.config_dir(run_dir, model, entry.config)
    trials: list[TrialEntry] = []
    counted: list[stats.Summary] = []
    for number in sorted(set(records) | set(logs)):
        record = records.get(number)
        log = (
            folder / record.log
            if record and record.log
            else results.log_path(run_dir, model, entry.config, trial=number)
        )
        summary, status, detail = _judge_log(log, record, entry, warmup_steps, profile_freq)
        tps = summary.avg_tps if summary is not None and status in COUNTED else None
        if tps is not None and summary is not None:
            counted.append(summary)
        estimate = stats.window_estimate(summary) if tps is not None and summary is not None else None
        trials.append(
            TrialEntry(
                trial=number,
                status=status or MISSING,
                detail=detail,
                log=log.name,
                measured_tps=tps,
                measured_tps_ci95=list(estimate.interval()) if estimate else None,
                windows_used=summary.n if summary else 0,
                stdev_tps=summary.stdev_tps if summary else None,
                started_at=record.started_at if record else None,
                stopped_early=_stopped_early(record, summary),
            )
        )
    entry.trials = trials
    stopped = [t.stopped_early for t in trials if t.stopped_early is not None]
    if stopped:
        entry.gpu_hours_saved = sum(s.gpu_hours_saved or 0.0 for s in stopped)
    _add_log_facts(entry, counted)
    if result:
        entry.status, entry.detail = result.status, _result_detail(result)
    elif all(t.status in COUNTED for t in trials):
        unverified = [f"trial {t.trial}: {t.detail}" for t in trials if t.status == "unverified"]
        entry.status, entry.detail = ("unverified", "; ".join(unverified)) if unverified else ("ok", None)
    else:
        failed = next(t for t in trials if t.status not in COUNTED)
        entry.status, entry.detail = failed.status, f"trial {failed.trial}: {failed.detail}"
    if entry.status not in COUNTED:
        return
    means = [t.measured_tps for t in trials if t.measured_tps is not None]
    if not means:
        entry.status, entry.detail = NO_DATA, "no trial has a window left to average"
        return
    entry.measured_tps = statistics.fmean(means)
    if entry.published_tps:
        entry.ratio = entry.measured_tps / entry.published_tps
    estimate = intervals.trial_means(means)
    if estimate is None:
        # One counted trial: its windows are all there is to go on.
        _add_interval(entry, counted[0])
        return
    entry.trials_stdev_tps = statistics.stdev(means)
    entry.measured_tps_ci95 = list(estimate.interval())
    entry.interval = IntervalEntry.model_validate(estimate.to_dict())


def _add_interval(entry: ConfigEntry, summary: stats.Summary) -> None:
    estimate = stats.window_estimate(summary)
    if estimate is None:
        entry.interval_note = intervals.no_interval_reason(summary.n)
        return
    entry.measured_tps_ci95 = list(estimate.interval())
    entry.interval = IntervalEntry.model_validate(estimate.to_dict())


def _add_speedups(configs: list[ConfigEntry]) -> None:
    """Async over vanilla TP, per quantization, from measured numbers only."""
    vanilla = {c.quantization: c for c in configs if c.tp_type == "vanilla" and c.measured_tps}
    for config in configs:
        base = vanilla.get(config.quantization)
        if base and base.measured_tps and config.measured_tps is not None and config.tp_type in TP_LABELS:
            config.speedup = config.measured_tps / base.measured_tps
            # A speedup is only as good as both of its numbers.
            config.speedup_unverified = "unverified" in (config.status, base.status)
            faster, baseline = config.estimate(), base.estimate()
            if config.tp_type == "async" and faster and baseline:
                config.speedup_ci95 = list(intervals.ratio_interval(faster, baseline))
                config.speedup_interval_holds_1 = intervals.holds(config.speedup_ci95, 1.0)


def _topology(
    spec: MatrixSpec | None, plans: list[results.RecordedPlan]
) -> tuple[Topology | None, TopologySource | None]:
    for plan in plans:
        if plan.topology is not None:
            return plan.topology, "run.json"
    if spec:
        return spec.topology, "published"
    return None, None


def _gpus(manifest: results.Manifest | None) -> list[results.RecordedGpu]:
    return manifest.gpu.gpus if manifest and manifest.gpu else []


def _gpu_name(manifest: results.Manifest | None) -> str | None:
    names = [g.name for g in _gpus(manifest) if g.name]
    return Counter(names).most_common(1)[0][0] if names else None


def short_gpu_name(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `H100`, as the published headings name GPUs."""
    found = _GPU_MODEL.search(name.removeprefix("NVIDIA "))
    return found[1] if found else name.removeprefix("NVIDIA ")


def _heading(model: str, spec: MatrixSpec | None, topology: Topology | None, gpu_name: str | None, device: str) -> str:
    """The published heading style: model, GPU count and type, FSDP, TP, compile, AC, local batch size."""
    unpublished = "" if spec and spec.published else " (no published reference)"
    if topology is None:
        return model + unpublished
    world = topology.world
    if device == "cpu":
        units = "CPU processes (gloo)"
    else:
        units = f"{short_gpu_name(gpu_name) if gpu_name else spec.heading.gpu if spec else 'GPU'}s"
    parts = [f"FSDP={topology.fsdp}", f"TP={topology.tp}"]
    if spec:
        if "--training.compile" in spec.common_flag_list:
            parts.append("torch.compile")
        parts += [spec.heading.activation_checkpointing, f"local batch size {spec.heading.local_batch_size}"]
    return f"{spec.title if spec else model} on {world} {units} with {', '.join(parts)}{unpublished}"


def _nvlink(matrix: list[list[bool | None]]) -> tuple[str | None, bool | None]:
    if not matrix:
        return None, None
    pairs = [(i, j) for i in range(len(matrix)) for j in range(i + 1, len(matrix))]
    linked = sum(1 for i, j in pairs if j < len(matrix[i]) and matrix[i][j])
    if linked == len(pairs):
        return f"NVLink between all {len(matrix)} GPUs", True
    return f"NVLink between {linked} of {len(pairs)} GPU pairs", False


def _rdma(ports: list[results.RecordedRdmaPort] | None) -> tuple[str | None, float | None]:
    if ports is None:
        return None, None
    active = [p for p in ports if p.state == "ACTIVE"]
    rates = sorted({p.rate for p in active if p.rate})
    speeds = [float(m[1]) for rate in rates if (m := _GBPS.search(rate))]
    text = f"{len(active)} active RDMA port(s) of {len(ports)}" + (f", {' / '.join(rates)}" if rates else "")
    return text, min(speeds) if speeds else None


def _environment_rows(
    spec: MatrixSpec | None, measured: Topology | None, manifest: results.Manifest | None, device: str
) -> list[EnvironmentRow]:
    """This run's hardware next to the published hardware.

    On CPU the reference is the spec's own CPU topology (processes stand in for GPUs)."""
    hardware = spec.hardware if spec else {}
    unavailable = manifest.unavailable if manifest else {}
    gpus = _gpus(manifest)
    gpu = _gpu_name(manifest)
    powers = sorted({g.power_limit_w for g in gpus if g.power_limit_w})
    nvlink, all_linked = _nvlink(manifest.gpu.nvlink if manifest and manifest.gpu else [])
    rdma, speed = _rdma(manifest.rdma if manifest else None)
    world = measured.world if measured else None
    published_world = spec.reference_topology("cpu" if device == "cpu" else "cuda").world if spec else None
    published_power = hardware.get("power_limit_w")
    memories = sorted({round(g.memory_total_mib / 1024, 1) for g in gpus if g.memory_total_mib})
    published_memory = _GB.search(str(hardware.get("gpu", "")))
    published_speed = _GBPS.search(str(hardware.get("inter_node", "")))
    return [
        EnvironmentRow(
            item="GPU",
            measured="none: a CPU run"
            if device == "cpu"
            else gpu or (f"unknown: {unavailable['gpu']}" if unavailable.get("gpu") else None),
            published=hardware.get("gpu"),
            differs=None if not gpu or not spec else spec.heading.gpu not in gpu,
        ),
        EnvironmentRow(
            item="GPU memory",
            measured=", ".join(f"{m:g} GiB" for m in memories) or None,
            published=f"{published_memory[1]} GB" if published_memory else None,
            # The reference's H100s have 96 GB (HBM2e); the common H100 SXM has 80 GB (HBM3): another machine.
            differs=None
            if not memories or not published_memory
            else any(abs(m - float(published_memory[1])) > GPU_MEMORY_TOLERANCE_GIB for m in memories),
        ),
        EnvironmentRow(
            item="CPU processes" if device == "cpu" else "GPUs",
            measured=world,
            published=published_world,
            differs=None if world is None or published_world is None else world != published_world,
        ),
        EnvironmentRow(
            item="Power limit (W)",
            measured=", ".join(f"{p:g}" for p in powers) or None,
            published=published_power,
            differs=None
            if not powers or not isinstance(published_power, int | float)
            else any(abs(p - published_power) > POWER_TOLERANCE_W for p in powers),
        ),
        EnvironmentRow(
            item="Intra-node",
            measured=nvlink,
            published=hardware.get("intra_node"),
            differs=None if all_linked is None else not all_linked,
        ),
        EnvironmentRow(
            item="Inter-node",
            measured=rdma or (f"unknown: {unavailable['rdma']}" if unavailable.get("rdma") else None),
            published=hardware.get("inter_node"),
            differs=None if speed is None or not published_speed else speed < float(published_speed[1]),
        ),
    ]


def _model_entry(
    run_dir: Path,
    model: str,
    *,
    spec: MatrixSpec | None,
    plans: list[results.RecordedPlan],
    present: set[str],
    manifest: results.Manifest | None,
    warmup_steps: int,
    profile_freq: int | None,
) -> ModelEntry:
    plan_by_config = {p.config: p for p in plans}
    ids = [c.id for c in spec.configs] if spec else []
    ids += [c for c in plan_by_config if c not in ids]
    ids += sorted(present - set(ids))
    configs = [
        _config_entry(
            run_dir,
            model,
            config_id,
            plan=plan_by_config.get(config_id),
            spec=spec,
            present=config_id in present,
            warmup_steps=warmup_steps,
            profile_freq=profile_freq,
        )
        for config_id in ids
    ]
    _add_speedups(configs)
    topology, topology_source = _topology(spec, plans)
    return ModelEntry(
        model=model,
        known=spec is not None,
        heading=_heading(model, spec, topology, _gpu_name(manifest), _device(plans)),
        topology=topology,
        topology_source=topology_source,
        deviations_recorded=bool(plans),
        environment=_environment_rows(
            spec, topology if topology_source == "run.json" else None, manifest, _device(plans)
        ),
        configs=configs,
    )


def _device(plans: list[results.RecordedPlan]) -> str:
    """What the run's plans ran on (cuda when not recorded: runs before `--device` existed)."""
    return next((p.device for p in plans if p.device), "cuda")


def _pins(run: results.RunRecord) -> tuple[dict[str, str], str]:
    if run.pins:
        return dict(run.pins), "run.json"
    return stack_pins(), "this titanbench installation (pin/versions.env)"


def _build_mode(manifest: results.Manifest | None) -> str | None:
    if manifest is None:
        return None
    return (manifest.pins.mode if manifest.pins else None) or manifest.env.get(settings.BUILD_MODE) or None


def _pin_checks(manifest: results.Manifest | None) -> list[PinCheck]:
    """Installed vs pinned, per component, from the manifest's pin report."""
    if manifest is None or manifest.pins is None:
        return []
    pins = manifest.pins
    components = {"torch": pins.torch, "torchao": pins.torchao, "torchtitan": pins.torchtitan}
    return [
        PinCheck(component=component, pinned=item.pinned(), installed=item.installed(), match=item.match)
        for component, item in components.items()
        if item is not None
    ]


def _specs(run: results.RunRecord) -> dict[str, MatrixSpec]:
    """The built-in matrices, plus the one the run asked for (`--model PATH`) when it is still there."""
    specs = {spec.model: spec for spec in resolve_models("all")}
    requested = run.request.model if run.request else None
    if requested is not None and requested != "all":
        # Moved or broken since the run: its plans in run.json still carry the published numbers.
        with contextlib.suppress(TitanbenchError):
            specs.update({spec.model: spec for spec in resolve_models(requested)})
    return specs


def collect(
    run_dir: Path, *, warmup_steps: int = stats.DEFAULT_WARMUP_STEPS, profile_freq: int | None = None
) -> ReportDocument:
    """The results document of a run directory (what `results.json` holds).

    run.json, when there, is checked where the report relies on it: a hand-edited or foreign file is one
    clear error."""
    run_dir = Path(run_dir)
    found = results.config_folders(run_dir)
    run = results.read_run(run_dir) or results.RunRecord()
    plans = run.configs
    if not found and not plans:
        raise TitanbenchError(
            f"{run_dir}: no results in it (expected <model>/<config>/{results.TRAIN_LOG} or a {results.RUN_FILE})"
        )
    specs = _specs(run)
    models = list(dict.fromkeys([p.model for p in plans] + [model for model, _ in found]))
    manifest = run.environment
    pin_values, pin_source = _pins(run)
    entries = [
        _model_entry(
            run_dir,
            model,
            spec=specs.get(model),
            plans=[p for p in plans if p.model == model],
            present={config for m, config in found if m == model},
            manifest=manifest,
            warmup_steps=warmup_steps,
            profile_freq=profile_freq,
        )
        for model in models
    ]
    repeated = any(c.trials for m in entries for c in m.configs)
    return ReportDocument(
        until_stable=_until_stable(run, entries),
        run_dir=str(run_dir),
        published_source=PUBLISHED_SOURCE,
        averaging=Averaging(
            warmup_steps=warmup_steps,
            profile_freq=profile_freq,
            method=stats.METHOD,
            interval_method=intervals.METHOD + (" " + intervals.TRIALS_METHOD if repeated else ""),
        ),
        models=entries,
        environment_recorded=manifest is not None,
        build_mode=_build_mode(manifest),
        pins=pin_values,
        pins_source=pin_source,
        pin_checks=_pin_checks(manifest),
    )


def _stopped_runs(config: ConfigEntry) -> list[tuple[str, StoppedEarlyEntry]]:
    """(label, record) of each run of a config that `--until-stable` stopped."""
    if config.stopped_early is not None:
        return [(config.config, config.stopped_early)]
    return [(f"{config.config} trial {t.trial}", t.stopped_early) for t in config.trials or [] if t.stopped_early]


def _until_stable(run: results.RunRecord, models: list[ModelEntry]) -> UntilStableEntry | None:
    """The run's `--until-stable` and what it saved in all; None for a run without it."""
    stopped = [record for m in models for c in m.configs for _, record in _stopped_runs(c)]
    pct = run.request.until_stable if run.request else None
    if pct is None and not stopped:
        return None
    return UntilStableEntry(
        pct=pct,
        runs_stopped=len(stopped),
        gpu_hours_saved=sum(s.gpu_hours_saved or 0.0 for s in stopped),
        method=SAVED_METHOD,
    )


# ---- render -------------------------------------------------------------------------------------


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _status(config: ConfigEntry) -> str:
    if config.status == "ok" and config.evidence_checked is False:
        trainer = config.trainer or "another trainer"
        return f"ok (async TP / float8 evidence not checked: {trainer} is not torchtitan's trainer)"
    return config.status + (f": {config.detail}" if config.detail and config.status != "ok" else "")


def _table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"

    return [line(header), "| " + " | ".join(align) + " |", *(line(row) for row in rows)]


def _published_shape(configs: list[ConfigEntry]) -> list[str]:
    rows = []
    for quantization, q_label in QUANTIZATION_LABELS.items():
        for tp_type, tp_label in TP_LABELS.items():
            config = next((c for c in configs if (c.tp_type, c.quantization) == (tp_type, quantization)), None)
            if config is not None:
                rows.append([tp_label, q_label, _tps_cell(config), _speedup_cell(config)])
    header = ["TP type", "Quantization", "Average TPS", "Speedup over vanilla TP baseline"]
    return _table(header, [":---", ":---", "---:", "---:"], rows) if rows else []


def _tps_cell(config: ConfigEntry | None) -> str:
    if config is None:
        return ""
    if config.measured_tps is None:
        return config.status
    tps = _with_interval(config.measured_tps, config.measured_tps_ci95, ".1f")
    return tps + (" (unverified)" if config.status == "unverified" else "")


def _speedup_cell(config: ConfigEntry | None) -> str:
    if config is None:
        return ""
    speedup = _with_interval(config.speedup, config.speedup_ci95, ".2f")
    if config.speedup_interval_holds_1:
        speedup += " (interval holds 1.00)"
    if config.speedup_unverified:
        speedup += " (unverified)"
    return speedup


def _merged_shape(configs: list[ConfigEntry]) -> list[str]:
    """The table shape of the merged benchmark file: one row per quantization."""
    rows = []
    for quantization, q_label in QUANTIZATION_LABELS.items():
        vanilla, asynchronous = (
            next((c for c in configs if (c.tp_type, c.quantization) == (tp_type, quantization)), None)
            for tp_type in ("vanilla", "async")
        )
        if vanilla or asynchronous:
            rows.append([q_label, _tps_cell(vanilla), _tps_cell(asynchronous), _speedup_cell(asynchronous)])
    header = ["Quantization", "Vanilla TP tokens/sec", "Async TP tokens/sec", "Async TP speedup"]
    return _table(header, [":---", "---:", "---:", "---:"], rows) if rows else []


def _with_interval(value: float | None, interval: list[float] | None, spec: str) -> str:
    """`652.4 [648.1, 656.7]`: a number and its 95% interval, compactly."""
    text = _number(value, spec)
    if value is not None and interval:
        text += f" [{_number(interval[0], spec)}, {_number(interval[1], spec)}]"
    return text


def _interval_notes(configs: list[ConfigEntry]) -> list[str]:
    """Under the table: what the brackets are, and which measured numbers have none, and why."""
    measured = [c for c in configs if c.measured_tps is not None]
    if not measured:
        return []
    if any(c.trials for c in measured):
        lines = [
            "Brackets: 95% intervals (from the trial averages for configs run several times, else batch means; "
            "see the averaging method)."
        ]
    else:
        lines = ["Brackets: 95% intervals (batch means; see the averaging method)."]
    for config in measured:
        if config.interval_note:
            lines.append(f"- {config.config}: {config.interval_note}")
        elif config.tp_type == "async" and config.speedup is not None and config.speedup_ci95 is None:
            lines.append(f"- {config.config}: no speedup interval (its vanilla baseline has none)")
    return lines


def _transport(config: ConfigEntry) -> str:
    """`IB, GPUDirect RDMA` when every node read says the same, else each node's."""
    if not config.transport:
        return ""
    if len(set(config.transport.values())) == 1:
        return next(iter(config.transport.values()))
    return "; ".join(f"node {rank}: {network}" for rank, network in config.transport.items())


def _spread(config: ConfigEntry) -> str:
    """The Stdev TPS cell: between the trials' averages for a config run several times, else between windows."""
    if config.trials_stdev_tps is not None:
        return f"{config.trials_stdev_tps:.1f} (between trials)"
    summary = config.summary
    return _number(summary.stdev_tps if summary and config.measured_tps is not None else None, ".1f")


def _windows_used(config: ConfigEntry) -> str:
    if config.trials:
        return " + ".join(str(t.windows_used) for t in config.trials)
    return str(config.summary.n) if config.summary else "0"


def _comparison(configs: list[ConfigEntry]) -> list[str]:
    published = any(c.published_tps for c in configs)
    networks = any(c.transport for c in configs)
    rows = [
        [
            c.config,
            _number(c.measured_tps, ".1f"),
            *([_number(c.published_tps, "g"), _number(c.ratio, ".2f")] if published else []),
            _spread(c),
            _windows_used(c),
            _number(c.mfu, ".2f") + ("%" if c.mfu is not None else ""),
            _number(c.peak_memory_gib, ".2f") + (" GiB" if c.peak_memory_gib is not None else ""),
            *([_transport(c)] if networks else []),
            _status(c),
        ]
        for c in configs
    ]
    header = ["Config", "Measured TPS", *(["Published TPS", "Measured / published"] if published else []), "Stdev TPS"]
    header += ["Windows used", "MFU", "Peak memory", *(["Network (NCCL)"] if networks else []), "Status"]
    align = [":---", *["---:"] * (len(header) - 2 - networks), *([":---"] if networks else []), ":---"]
    return _table(header, align, rows)


def _trials(configs: list[ConfigEntry]) -> list[str]:
    """One line per config run several times: each trial's average [its own interval], or its status."""
    lines = []
    for config in configs:
        if not config.trials:
            continue
        shown = []
        for trial in config.trials:
            if trial.measured_tps is None:
                text = trial.status + (f": {trial.detail}" if trial.detail else "")
            else:
                text = _with_interval(trial.measured_tps, trial.measured_tps_ci95, ".1f")
                text += " (unverified)" if trial.status == "unverified" else ""
            shown.append(f"trial {trial.trial} {text}")
        spread = f", between-trial stdev {config.trials_stdev_tps:.1f}" if config.trials_stdev_tps is not None else ""
        lines.append(f"- {config.config} ({len(config.trials)} trials{spread}): " + "; ".join(shown))
    return ["Trials (average TPS of each run of the config):", "", *lines, ""] if lines else []


def _gpu_hours(value: float | None) -> str:
    if value is None:
        return "unknown (no step time recorded)"
    return f"{value:,.1f}" if value >= 1 else f"{value:.2g}"


def _stopped_lines(configs: list[ConfigEntry]) -> list[str]:
    """One line per run `--until-stable` stopped: where, how tight, and the GPU-hours saved (an estimate)."""
    lines = [
        f"- {label}: at step {s.at_step} of {s.planned_steps} (95% interval within +-{s.half_width_pct:.2f}% of "
        f"the average; last step logged {s.last_step}), about {_gpu_hours(s.gpu_hours_saved)} GPU-hours saved "
        "(estimate)"
        for config in configs
        for label, s in _stopped_runs(config)
    ]
    return ["Stopped early (`--until-stable`):", "", *lines, ""] if lines else []


def _deviations(model: ModelEntry) -> list[str]:
    if not model.deviations_recorded:
        return ["Not recorded: no plans in run.json (logs only)."]
    lines = []
    for config in model.configs:
        if not config.planned:
            text = "not planned in this run"
        elif config.deviations is None:
            text = "not recorded"
        else:
            text = "; ".join(config.deviations) or "none"
        lines.append(f"- {config.config}: {text}")
    return lines


def _environment(model: ModelEntry) -> list[str]:
    rows = [
        [
            row.item,
            "not recorded" if row.measured is None else str(row.measured),
            "n/a" if row.published is None else str(row.published),
            "**differs**" if row.differs else "same" if row.differs is False else "",
        ]
        for row in model.environment
    ]
    return _table(["", "This run", "Published", ""], [":---", ":---", ":---", ":---"], rows)


# The two published table shapes: the draft commits' (one row per config), the merged file's (one per quantization).
TABLE_SHAPES = {"draft": _published_shape, "merged": _merged_shape}


def _model_section(model: ModelEntry, environment_recorded: bool, table: str = "draft") -> list[str]:
    lines = [f"#### {model.heading}", ""]
    if model.topology_source == "published":
        lines += ["(Published topology: this run recorded none.)", ""]
    shape = TABLE_SHAPES[table](model.configs)
    if shape:
        lines += [*shape, ""]
        notes = _interval_notes(model.configs)
        if notes:
            lines += [*notes, ""]
    published = any(c.published_tps for c in model.configs)
    lines += ["Measured against published:" if published else "Measured:", "", *_comparison(model.configs), ""]
    lines += _trials(model.configs)
    lines += _stopped_lines(model.configs)
    lines += ["Deviations from the published setup:", "", *_deviations(model), ""]
    lines += ["Environment:", ""]
    if not environment_recorded:
        lines += ["(No environment manifest in run.json: only the topology is known.)", ""]
    lines += [*_environment(model), ""]
    return lines


def _pins_section(doc: ReportDocument) -> list[str]:
    mode = doc.build_mode
    if mode == "release":
        title = "Pins (approximate pins: release build, the nearest public releases of the pinned stack)"
    elif mode:
        title = f"Pins ({mode} build)"
    else:
        title = "Pins (not titanbench's image: what was installed is below)"
    lines = [f"### {title}", "", f"From {doc.pins_source}.", ""]
    lines += _table(["Pin", "Value"], [":---", ":---"], [[k, v] for k, v in doc.pins.items()])
    if doc.pin_checks:
        checks = [
            [
                c.component,
                str(c.pinned),
                str(c.installed),
                "yes" if c.match else "**no**" if c.match is False else "cannot tell",
            ]
            for c in doc.pin_checks
        ]
        header = ["Component", "Pinned", "Installed (version / commit)", "Matches the pin"]
        lines += ["", "Installed in the run's environment:", "", *_table(header, [":---"] * 4, checks)]
    return [*lines, ""]


def _method_section(doc: ReportDocument) -> list[str]:
    averaging = doc.averaging
    freq = averaging.profile_freq
    used = f"This report: warm-up steps {averaging.warmup_steps}, " + (
        f"profiler dumps at steps {freq}, {2 * freq}, ... and wherever the log reports one."
        if freq
        else "profiler dumps where the log reports them."
    )
    interval = averaging.interval_method
    return ["### Averaging method", "", averaging.method, "", *([interval, ""] if interval else []), used, ""]


def render_markdown(doc: ReportDocument, table: str = "draft") -> str:
    published = any(c.published_tps for model in doc.models for c in model.configs)
    source = (
        f"Published numbers: {doc.published_source}."
        if published
        else "No published numbers for this matrix: measured numbers and speedups only."
    )
    lines = [f"# titanbench results: {Path(doc.run_dir).name}", "", source, ""]
    for model in doc.models:
        lines += _model_section(model, doc.environment_recorded, table)
    if doc.until_stable is not None:
        until = doc.until_stable
        bound = f" {until.pct:g}" if until.pct is not None else ""
        lines += [
            f"### Stopped early (`--until-stable{bound}`)",
            "",
            f"{until.runs_stopped} run(s) stopped before their planned step: about "
            f"{_gpu_hours(until.gpu_hours_saved)} GPU-hours saved in all. {until.method}.",
            "",
        ]
    lines += _pins_section(doc)
    lines += _method_section(doc)
    return "\n".join(lines).rstrip() + "\n"


def render_json(doc: ReportDocument) -> str:
    return json.dumps(doc.model_dump(mode="json"), indent=2) + "\n"


def write_png(doc: ReportDocument, path: Path) -> None:
    from titanbench.chart import render_png

    write_bytes(path, render_png(doc))


def steps_chart_path(chart: Path) -> Path:
    """Where the per-config step charts go, next to the main chart: RESULTS.png -> RESULTS-steps.png."""
    return chart.with_name(f"{chart.stem}-steps{chart.suffix or '.png'}")


def write_steps_png(doc: ReportDocument, path: Path) -> None:
    from titanbench.chart import render_steps_png

    write_bytes(path, render_steps_png(doc))


def write_all(
    run_dir: Path, *, warmup_steps: int = stats.DEFAULT_WARMUP_STEPS, profile_freq: int | None = None
) -> ReportDocument:
    """Write RUN_DIR/results.json, RESULTS.md, RESULTS.png and RESULTS-steps.png (each atomically); return the
    document."""
    run_dir = Path(run_dir)
    doc = collect(run_dir, warmup_steps=warmup_steps, profile_freq=profile_freq)
    write_text(run_dir / RESULTS_JSON, render_json(doc))
    write_text(run_dir / RESULTS_MD, render_markdown(doc))
    write_png(doc, run_dir / RESULTS_PNG)
    write_steps_png(doc, run_dir / RESULTS_STEPS_PNG)
    return doc
