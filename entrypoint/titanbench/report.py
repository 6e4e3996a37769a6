"""The report: a run directory's measured numbers next to the published table.

`collect` turns a results directory (see `titanbench.results`) into one JSON document; the markdown
and the chart are rendered from that document alone, so `results.json` can be re-rendered later.
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
from typing import Any

from titanbench import intervals, logparse, results, settings, stats
from titanbench.atomic import write_bytes, write_json, write_text
from titanbench.errors import TitanbenchError
from titanbench.pins import stack_pins
from titanbench.spec import (
    POWER_TOLERANCE_W,
    QUANTIZATION_LABELS,
    QUANTIZATIONS,
    TP_LABELS,
    MatrixSpec,
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
MISSING = "missing"
NO_DATA = "no data"
_CONFIG_ID = re.compile(rf"^(vanilla|async)-({'|'.join(QUANTIZATIONS)})$")
_GPU_MODEL = re.compile(r"\b([A-Z]+\d+[A-Za-z]*)\b")
_GBPS = re.compile(r"(\d+(?:\.\d+)?)\s*Gb")


# ---- collect ------------------------------------------------------------------------------------


def _read_run(run_dir: Path) -> dict[str, Any]:
    """run.json, checked where the report relies on it: a hand-edited or foreign file is one clear error."""
    return results.read_run(run_dir) or {}


def _plans(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-config plans the runner recorded in run.json (`ConfigPlan.to_dict()` each)."""
    return run.get("configs") or []


def _manifest(run: dict[str, Any]) -> dict[str, Any] | None:
    """The environment manifest (`titanbench env --json`) the runner recorded in run.json, if any."""
    manifest = run.get("environment")
    return manifest if isinstance(manifest, dict) else None


def _labels(config_id: str, plan: dict | None, spec: MatrixSpec | None) -> tuple[str | None, str | None]:
    if plan and plan.get("tp_type") in TP_LABELS and plan.get("quantization") in QUANTIZATION_LABELS:
        return plan["tp_type"], plan["quantization"]
    if spec and any(c.id == config_id for c in spec.configs):
        config = spec.config(config_id)
        return config.tp_type, config.quantization
    match = _CONFIG_ID.match(config_id)
    return (match[1], match[2]) if match else (None, None)


def _result_detail(result: dict[str, Any]) -> str | None:
    if result.get("reason"):
        return str(result["reason"])
    code = result.get("returncode", result.get("exit_code"))
    return None if code is None else f"exit code {code}"


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _config_entry(
    run_dir: Path,
    model: str,
    config_id: str,
    *,
    plan: dict[str, Any] | None,
    spec: MatrixSpec | None,
    present: bool,
    warmup_steps: int,
    profile_freq: int | None,
) -> dict[str, Any]:
    tp_type, quantization = _labels(config_id, plan, spec)
    published = plan.get("published_tps") if plan else None
    if published is None and spec and any(c.id == config_id for c in spec.configs):
        published = spec.config(config_id).published_tps
    entry: dict[str, Any] = {
        "config": config_id,
        "tp_type": tp_type,
        "quantization": quantization,
        "status": MISSING,
        "detail": None,
        "measured_tps": None,
        # 95% interval of the average (titanbench.intervals); `interval` holds its batch-means estimate,
        # `interval_note` why there is none.
        "measured_tps_ci95": None,
        "interval": None,
        "interval_note": None,
        "published_tps": published,
        "ratio": None,
        "speedup": None,
        "speedup_unverified": None,
        # Async configs only: 95% interval of the speedup, and whether it holds 1.00 (no significant speedup).
        "speedup_ci95": None,
        "speedup_interval_holds_1": None,
        "mfu": None,
        "peak_memory_gib": None,
        "planned": plan is not None,
        "deviations": plan.get("deviations") if plan else None,
        "trainer": plan.get("trainer") if plan else None,
        "evidence_checked": None,
        "evidence": None,
        "summary": None,
    }
    if not present:
        entry["detail"] = "no results folder for this config"
        return entry
    try:
        result = results.read_result(run_dir, model, config_id)
    except TitanbenchError as error:
        entry.update(status=NO_DATA, detail=error.message)
        return entry
    log = results.log_path(run_dir, model, config_id)
    summary: stats.Summary | None = None
    log_problem: str | None = None
    try:
        summary = stats.summarize_file(log, warmup_steps=warmup_steps, profile_freq=profile_freq)
    except TitanbenchError as error:
        log_problem = error.message
    else:
        if not summary.n:
            log_problem = "no window left after the warm-up and profiler windows"
    status = result.get("status") if result else None
    detail = _result_detail(result) if result else None
    entry["evidence_checked"] = result.get("evidence_checked") if result else None
    if summary is not None:
        found = summary.evidence or logparse.evidence(log.read_text(errors="replace"))
        entry["evidence"] = {"async_tp": found.async_tp, "float8_recipe": found.float8_recipe}
        entry["summary"] = summary.to_dict()
        used = [w for w in summary.windows if w.step in set(summary.used_steps)]
        entry["mfu"] = _mean([w.mfu for w in used if w.mfu is not None])
        memory = [w.memory_gib for w in summary.windows if w.memory_gib is not None]
        entry["peak_memory_gib"] = max(memory) if memory else None
        if status is None:
            # Logs alone: the log itself must show what the config claims (the runner checks this too).
            detail = "; ".join(logparse.evidence_problems(tp_type, quantization, found)) or None
            status = "unverified" if detail else "ok"
    if status in (None, *COUNTED) and log_problem:
        status, detail = NO_DATA, log_problem
    entry.update(status=status, detail=detail)
    if status in COUNTED and summary is not None and summary.avg_tps is not None:
        entry["measured_tps"] = summary.avg_tps
        if published:
            entry["ratio"] = summary.avg_tps / published
        _add_interval(entry, summary)
    return entry


def _add_interval(entry: dict[str, Any], summary: stats.Summary) -> None:
    used = set(summary.used_steps)
    tps = [w.tps for w in summary.windows if w.step in used and w.tps is not None]
    estimate = intervals.batch_means(tps)
    if estimate is None:
        entry["interval_note"] = intervals.no_interval_reason(len(tps))
        return
    entry["measured_tps_ci95"] = list(estimate.interval())
    entry["interval"] = estimate.to_dict()


def estimate_of(config: dict[str, Any]) -> intervals.Estimate | None:
    """The batch-means estimate a results document recorded for a config (None without an interval)."""
    recorded = config.get("interval")
    if config.get("measured_tps") is None or not isinstance(recorded, dict):
        return None
    return intervals.Estimate(
        mean=config["measured_tps"],
        se=recorded["se"],
        df=recorded["df"],
        n=(config.get("summary") or {}).get("n", 0),
        batches=recorded["batches"],
        batch_size=recorded["batch_size"],
    )


def _add_speedups(configs: list[dict[str, Any]]) -> None:
    """Async over vanilla TP, per quantization, from measured numbers only."""
    vanilla = {c["quantization"]: c for c in configs if c["tp_type"] == "vanilla" and c["measured_tps"]}
    for config in configs:
        base = vanilla.get(config["quantization"])
        if base and config["measured_tps"] is not None and config["tp_type"] in TP_LABELS:
            config["speedup"] = config["measured_tps"] / base["measured_tps"]
            # A speedup is only as good as both of its numbers.
            config["speedup_unverified"] = "unverified" in (config["status"], base["status"])
            faster, baseline = estimate_of(config), estimate_of(base)
            if config["tp_type"] == "async" and faster and baseline:
                config["speedup_ci95"] = list(intervals.ratio_interval(faster, baseline))
                config["speedup_interval_holds_1"] = intervals.holds(config["speedup_ci95"], 1.0)


def _topology(spec: MatrixSpec | None, plans: list[dict[str, Any]]) -> tuple[dict[str, int] | None, str | None]:
    for plan in plans:
        if isinstance(plan.get("topology"), dict):
            return dict(plan["topology"]), "run.json"
    if spec:
        return spec.topology.model_dump(), "published"
    return None, None


def _gpu_name(manifest: dict[str, Any] | None) -> str | None:
    gpus = ((manifest or {}).get("gpu") or {}).get("gpus") or []
    names = [g["name"] for g in gpus if isinstance(g, dict) and g.get("name")]
    return Counter(names).most_common(1)[0][0] if names else None


def short_gpu_name(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `H100`, as the published headings name GPUs."""
    found = _GPU_MODEL.search(name.removeprefix("NVIDIA "))
    return found[1] if found else name.removeprefix("NVIDIA ")


def _heading(
    model: str, spec: MatrixSpec | None, topology: dict[str, int] | None, gpu_name: str | None, device: str
) -> str:
    """The published heading style: model, GPU count and type, FSDP, TP, compile, AC, local batch size."""
    unpublished = "" if spec and spec.published else " (no published reference)"
    if topology is None:
        return model + unpublished
    world = topology["nodes"] * topology["gpus_per_node"]
    if device == "cpu":
        units = "CPU processes (gloo)"
    else:
        units = f"{short_gpu_name(gpu_name) if gpu_name else spec.heading.gpu if spec else 'GPU'}s"
    parts = [f"FSDP={topology['fsdp']}", f"TP={topology['tp']}"]
    if spec:
        if "--training.compile" in spec.common_flag_list:
            parts.append("torch.compile")
        parts += [spec.heading.activation_checkpointing, f"local batch size {spec.heading.local_batch_size}"]
    return f"{spec.title if spec else model} on {world} {units} with {', '.join(parts)}{unpublished}"


def _nvlink(matrix: Any) -> tuple[str | None, bool | None]:
    if not isinstance(matrix, list) or not matrix:
        return None, None
    pairs = [(i, j) for i in range(len(matrix)) for j in range(i + 1, len(matrix))]
    linked = sum(1 for i, j in pairs if j < len(matrix[i]) and matrix[i][j])
    if linked == len(pairs):
        return f"NVLink between all {len(matrix)} GPUs", True
    return f"NVLink between {linked} of {len(pairs)} GPU pairs", False


def _rdma(ports: Any) -> tuple[str | None, float | None]:
    if not isinstance(ports, list):
        return None, None
    active = [p for p in ports if isinstance(p, dict) and p.get("state") == "ACTIVE"]
    rates = sorted({str(p.get("rate")) for p in active if p.get("rate")})
    speeds = [float(m[1]) for rate in rates if (m := _GBPS.search(rate))]
    text = f"{len(active)} active RDMA port(s) of {len(ports)}" + (f", {' / '.join(rates)}" if rates else "")
    return text, min(speeds) if speeds else None


def _environment_rows(
    spec: MatrixSpec | None, measured: dict[str, int] | None, manifest: dict[str, Any] | None, device: str
) -> list[dict[str, Any]]:
    """This run's hardware next to the published hardware; `differs` is None where it cannot tell.

    On CPU the reference is the spec's own CPU topology (processes stand in for GPUs)."""
    hardware = spec.hardware if spec else {}
    facts = (manifest or {}).get("gpu") or {}
    unavailable = (manifest or {}).get("unavailable") or {}
    gpus = facts.get("gpus") or []
    gpu = _gpu_name(manifest)
    powers = sorted({g["power_limit_w"] for g in gpus if isinstance(g, dict) and g.get("power_limit_w")})
    nvlink, all_linked = _nvlink(facts.get("nvlink"))
    rdma, speed = _rdma((manifest or {}).get("rdma"))
    world = measured["nodes"] * measured["gpus_per_node"] if measured else None
    published_world = spec.reference_topology("cpu" if device == "cpu" else "cuda").world if spec else None
    published_power = hardware.get("power_limit_w")
    published_speed = _GBPS.search(str(hardware.get("inter_node", "")))
    rows: list[dict[str, Any]] = [
        {
            "item": "GPU",
            "measured": "none: a CPU run"
            if device == "cpu"
            else gpu or (f"unknown: {unavailable['gpu']}" if unavailable.get("gpu") else None),
            "published": hardware.get("gpu"),
            "differs": None if not gpu or not spec else spec.heading.gpu not in gpu,
        },
        {
            "item": "CPU processes" if device == "cpu" else "GPUs",
            "measured": world,
            "published": published_world,
            "differs": None if world is None or published_world is None else world != published_world,
        },
        {
            "item": "Power limit (W)",
            "measured": ", ".join(f"{p:g}" for p in powers) or None,
            "published": published_power,
            "differs": None
            if not powers or published_power is None
            else any(abs(p - published_power) > POWER_TOLERANCE_W for p in powers),
        },
        {
            "item": "Intra-node",
            "measured": nvlink,
            "published": hardware.get("intra_node"),
            "differs": None if all_linked is None else not all_linked,
        },
        {
            "item": "Inter-node",
            "measured": rdma or (f"unknown: {unavailable['rdma']}" if unavailable.get("rdma") else None),
            "published": hardware.get("inter_node"),
            "differs": None if speed is None or not published_speed else speed < float(published_speed[1]),
        },
    ]
    return rows


def _model_entry(
    run_dir: Path,
    model: str,
    *,
    spec: MatrixSpec | None,
    plans: list[dict[str, Any]],
    present: set[str],
    manifest: dict[str, Any] | None,
    warmup_steps: int,
    profile_freq: int | None,
) -> dict[str, Any]:
    plan_by_config = {p["config"]: p for p in plans}
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
    return {
        "model": model,
        "known": spec is not None,
        "heading": _heading(model, spec, topology, _gpu_name(manifest), _device(plans)),
        "topology": topology,
        "topology_source": topology_source,
        "deviations_recorded": bool(plans),
        "environment": _environment_rows(
            spec, topology if topology_source == "run.json" else None, manifest, _device(plans)
        ),
        "configs": configs,
    }


def _device(plans: list[dict[str, Any]]) -> str:
    """What the run's plans ran on (cuda when not recorded: runs before `--device` existed)."""
    return next((str(p["device"]) for p in plans if p.get("device")), "cuda")


def _pins(run: dict[str, Any]) -> tuple[dict[str, str], str]:
    recorded = run.get("pins")
    if recorded:
        return dict(recorded), "run.json"
    return stack_pins(), "this titanbench installation (pin/versions.env)"


def _build_mode(run: dict[str, Any], manifest: dict[str, Any] | None) -> str | None:
    manifest = manifest or {}
    candidates = [
        run.get("build_mode"),
        (manifest.get("pins") or {}).get("mode") if isinstance(manifest.get("pins"), dict) else None,
        (manifest.get("env") or {}).get(settings.BUILD_MODE),
    ]
    return next((c for c in candidates if isinstance(c, str) and c), None)


def _pin_checks(manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Installed vs pinned, per component, from the manifest's pin report."""
    report = (manifest or {}).get("pins")
    if not isinstance(report, dict):
        return []
    checks = []
    for component in ("torch", "torchao", "torchtitan"):
        item = report.get(component)
        if isinstance(item, dict):
            expected = item.get("expected_git_version") or item.get("expected_commit") or item.get("expected")
            installed = item.get("git_version") or item.get("commit") or item.get("version")
            checks.append(
                {"component": component, "pinned": expected, "installed": installed, "match": item.get("match")}
            )
    return checks


def _specs(run: dict[str, Any]) -> dict[str, MatrixSpec]:
    """The built-in matrices, plus the one the run asked for (`--model PATH`) when it is still there."""
    specs = {spec.model: spec for spec in resolve_models("all")}
    requested = (run.get("request") or {}).get("model")
    if isinstance(requested, str) and requested != "all":
        # Moved or broken since the run: its plans in run.json still carry the published numbers.
        with contextlib.suppress(TitanbenchError):
            specs.update({spec.model: spec for spec in resolve_models(requested)})
    return specs


def collect(run_dir: Path, *, warmup_steps: int = stats.DEFAULT_WARMUP_STEPS, profile_freq: int | None = None) -> dict:
    """The results document of a run directory (what `results.json` holds)."""
    run_dir = Path(run_dir)
    found = results.config_folders(run_dir)
    run = _read_run(run_dir)
    plans = _plans(run)
    if not found and not plans:
        raise TitanbenchError(
            f"{run_dir}: no results in it (expected <model>/<config>/{results.TRAIN_LOG} or a {results.RUN_FILE})"
        )
    specs = _specs(run)
    models = list(dict.fromkeys([p["model"] for p in plans] + [model for model, _ in found]))
    manifest = _manifest(run)
    pin_values, pin_source = _pins(run)
    return {
        "run_dir": str(run_dir),
        "published_source": PUBLISHED_SOURCE,
        "averaging": {
            "warmup_steps": warmup_steps,
            "profile_freq": profile_freq,
            "method": stats.METHOD,
            "interval_method": intervals.METHOD,
        },
        "models": [
            _model_entry(
                run_dir,
                model,
                spec=specs.get(model),
                plans=[p for p in plans if p["model"] == model],
                present={config for m, config in found if m == model},
                manifest=manifest,
                warmup_steps=warmup_steps,
                profile_freq=profile_freq,
            )
            for model in models
        ],
        "environment_recorded": manifest is not None,
        "build_mode": _build_mode(run, manifest),
        "pins": pin_values,
        "pins_source": pin_source,
        "pin_checks": _pin_checks(manifest),
    }


# ---- render -------------------------------------------------------------------------------------


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _status(config: dict[str, Any]) -> str:
    if config["status"] == "ok" and config.get("evidence_checked") is False:
        trainer = config.get("trainer") or "another trainer"
        return f"ok (async TP / float8 evidence not checked: {trainer} is not torchtitan's trainer)"
    return config["status"] + (f": {config['detail']}" if config["detail"] and config["status"] != "ok" else "")


def _table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"

    return [line(header), "| " + " | ".join(align) + " |", *(line(row) for row in rows)]


def _published_shape(configs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for quantization, q_label in QUANTIZATION_LABELS.items():
        for tp_type, tp_label in TP_LABELS.items():
            config = next((c for c in configs if (c["tp_type"], c["quantization"]) == (tp_type, quantization)), None)
            if config is None:
                continue
            if config["measured_tps"] is None:
                tps = config["status"]
            else:
                tps = _with_interval(config["measured_tps"], config.get("measured_tps_ci95"), ".1f")
                tps += " (unverified)" if config["status"] == "unverified" else ""
            speedup = _with_interval(config["speedup"], config.get("speedup_ci95"), ".2f")
            if config.get("speedup_interval_holds_1"):
                speedup += " (interval holds 1.00)"
            if config.get("speedup_unverified"):
                speedup += " (unverified)"
            rows.append([tp_label, q_label, tps, speedup])
    header = ["TP type", "Quantization", "Average TPS", "Speedup over vanilla TP baseline"]
    return _table(header, [":---", ":---", "---:", "---:"], rows) if rows else []


def _with_interval(value: float | None, interval: list[float] | None, spec: str) -> str:
    """`652.4 [648.1, 656.7]`: a number and its 95% interval, compactly."""
    text = _number(value, spec)
    if value is not None and interval:
        text += f" [{_number(interval[0], spec)}, {_number(interval[1], spec)}]"
    return text


def _interval_notes(configs: list[dict[str, Any]]) -> list[str]:
    """Under the table: what the brackets are, and which measured numbers have none, and why."""
    measured = [c for c in configs if c["measured_tps"] is not None]
    if not measured:
        return []
    lines = ["Brackets: 95% intervals (batch means; see the averaging method)."]
    for config in measured:
        if config.get("interval_note"):
            lines.append(f"- {config['config']}: {config['interval_note']}")
        elif config["tp_type"] == "async" and config["speedup"] is not None and config.get("speedup_ci95") is None:
            lines.append(f"- {config['config']}: no speedup interval (its vanilla baseline has none)")
    return lines


def _comparison(configs: list[dict[str, Any]]) -> list[str]:
    published = any(c["published_tps"] for c in configs)
    rows = [
        [
            c["config"],
            _number(c["measured_tps"], ".1f"),
            *([_number(c["published_tps"], "g"), _number(c["ratio"], ".2f")] if published else []),
            _number((c["summary"] or {}).get("stdev_tps") if c["measured_tps"] is not None else None, ".1f"),
            str(c["summary"]["n"]) if c["summary"] else "0",
            _number(c["mfu"], ".2f") + ("%" if c["mfu"] is not None else ""),
            _number(c["peak_memory_gib"], ".2f") + (" GiB" if c["peak_memory_gib"] is not None else ""),
            _status(c),
        ]
        for c in configs
    ]
    header = ["Config", "Measured TPS", *(["Published TPS", "Measured / published"] if published else []), "Stdev TPS"]
    header += ["Windows used", "MFU", "Peak memory", "Status"]
    return _table(header, [":---", *["---:"] * (len(header) - 2), ":---"], rows)


def _deviations(model: dict[str, Any]) -> list[str]:
    if not model["deviations_recorded"]:
        return ["Not recorded: no plans in run.json (logs only)."]
    lines = []
    for config in model["configs"]:
        deviations = config["deviations"]
        if not config["planned"]:
            text = "not planned in this run"
        elif deviations is None:
            text = "not recorded"
        else:
            text = "; ".join(deviations) or "none"
        lines.append(f"- {config['config']}: {text}")
    return lines


def _environment(model: dict[str, Any]) -> list[str]:
    rows = [
        [
            row["item"],
            "not recorded" if row["measured"] is None else str(row["measured"]),
            "n/a" if row["published"] is None else str(row["published"]),
            "**differs**" if row["differs"] else "same" if row["differs"] is False else "",
        ]
        for row in model["environment"]
    ]
    return _table(["", "This run", "Published", ""], [":---", ":---", ":---", ":---"], rows)


def _model_section(model: dict[str, Any], environment_recorded: bool) -> list[str]:
    lines = [f"#### {model['heading']}", ""]
    if model["topology_source"] == "published":
        lines += ["(Published topology: this run recorded none.)", ""]
    shape = _published_shape(model["configs"])
    if shape:
        lines += [*shape, ""]
        notes = _interval_notes(model["configs"])
        if notes:
            lines += [*notes, ""]
    published = any(c["published_tps"] for c in model["configs"])
    lines += ["Measured against published:" if published else "Measured:", "", *_comparison(model["configs"]), ""]
    lines += ["Deviations from the published setup:", "", *_deviations(model), ""]
    lines += ["Environment:", ""]
    if not environment_recorded:
        lines += ["(No environment manifest in run.json: only the topology is known.)", ""]
    lines += [*_environment(model), ""]
    return lines


def _pins_section(doc: dict[str, Any]) -> list[str]:
    mode = doc["build_mode"]
    if mode == "release":
        title = "Pins (approximate pins: release build, the nearest public releases of the pinned stack)"
    elif mode:
        title = f"Pins ({mode} build)"
    else:
        title = "Pins (not titanbench's image: what was installed is below)"
    lines = [f"### {title}", "", f"From {doc['pins_source']}.", ""]
    lines += _table(["Pin", "Value"], [":---", ":---"], [[k, v] for k, v in doc["pins"].items()])
    if doc["pin_checks"]:
        checks = [
            [
                c["component"],
                str(c["pinned"]),
                str(c["installed"]),
                {True: "yes", False: "**no**"}.get(c["match"], "cannot tell"),
            ]
            for c in doc["pin_checks"]
        ]
        header = ["Component", "Pinned", "Installed (version / commit)", "Matches the pin"]
        lines += ["", "Installed in the run's environment:", "", *_table(header, [":---"] * 4, checks)]
    return [*lines, ""]


def _method_section(doc: dict[str, Any]) -> list[str]:
    averaging = doc["averaging"]
    freq = averaging["profile_freq"]
    used = f"This report: warm-up steps {averaging['warmup_steps']}, " + (
        f"profiler dumps at steps {freq}, {2 * freq}, ... and wherever the log reports one."
        if freq
        else "profiler dumps where the log reports them."
    )
    interval = averaging.get("interval_method")
    return ["### Averaging method", "", averaging["method"], "", *([interval, ""] if interval else []), used, ""]


def render_markdown(doc: dict) -> str:
    published = any(c["published_tps"] for model in doc["models"] for c in model["configs"])
    source = (
        f"Published numbers: {doc['published_source']}."
        if published
        else "No published numbers for this matrix: measured numbers and speedups only."
    )
    lines = [f"# titanbench results: {Path(doc['run_dir']).name}", "", source, ""]
    for model in doc["models"]:
        lines += _model_section(model, doc["environment_recorded"])
    lines += _pins_section(doc)
    lines += _method_section(doc)
    return "\n".join(lines).rstrip() + "\n"


def render_json(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"


def write_png(doc: dict, path: Path) -> None:
    from titanbench.chart import render_png

    write_bytes(path, render_png(doc))


def steps_chart_path(chart: Path) -> Path:
    """Where the per-config step charts go, next to the main chart: RESULTS.png -> RESULTS-steps.png."""
    return chart.with_name(f"{chart.stem}-steps{chart.suffix or '.png'}")


def write_steps_png(doc: dict, path: Path) -> None:
    from titanbench.chart import render_steps_png

    write_bytes(path, render_steps_png(doc))


def write_all(run_dir: Path, **collect_kwargs: Any) -> dict:
    """Write RUN_DIR/results.json, RESULTS.md, RESULTS.png and RESULTS-steps.png (each atomically); return the
    document."""
    run_dir = Path(run_dir)
    doc = collect(run_dir, **collect_kwargs)
    write_json(run_dir / RESULTS_JSON, doc)
    write_text(run_dir / RESULTS_MD, render_markdown(doc))
    write_png(doc, run_dir / RESULTS_PNG)
    write_steps_png(doc, run_dir / RESULTS_STEPS_PNG)
    return doc
