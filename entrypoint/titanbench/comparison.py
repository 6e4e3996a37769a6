"""`titanbench compare`: two run directories side by side, per model and config.

Each run is read exactly as `titanbench report` reads it (`report.collect`: logs alone work), so each
config's average TPS carries its batch-means estimate; B / A gets a 95% interval by the log-scale delta
method (two independent runs, as for a speedup) and is significant at 5% when that interval excludes
1.00. Typical uses: the exact-pin image vs the release image, this cluster vs last month, two NCCL
settings. Runs of different topologies are compared too, and the document says so.
"""

import json
from pathlib import Path
from typing import Any

from titanbench import intervals, report
from titanbench.report import estimate_of

METHOD = (
    "B / A is the ratio of the two runs' average TPS (each averaged as `titanbench report` does). Its 95% "
    "interval: the delta method on the log scale over the two runs' batch-means standard errors (independent "
    "runs), Student-t with Welch-Satterthwaite degrees of freedom. Significant at 5%: the interval excludes "
    "1.00; `significant` is null where either run has no interval (fewer than "
    f"{intervals.MIN_WINDOWS} used windows) or no number."
)


def _configs(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(model["model"], c["config"]): c for model in doc["models"] for c in model["configs"]}


def _topology_text(topology: dict[str, int] | None) -> str:
    if not topology:
        return "not known"
    nodes, per_node = topology["nodes"], topology["gpus_per_node"]
    return f"{nodes * per_node} GPUs ({nodes} x {per_node}), FSDP {topology['fsdp']} x TP {topology['tp']}"


def _topologies(doc_a: dict[str, Any], doc_b: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model in both runs: each run's topology and whether they differ (None: a run did not record it)."""
    models_b = {m["model"]: m for m in doc_b["models"]}
    rows = []
    for model_a in doc_a["models"]:
        model_b = models_b.get(model_a["model"])
        if model_b is None:
            continue
        recorded = [m["topology"] if m["topology_source"] == "run.json" else None for m in (model_a, model_b)]
        differs = None if None in recorded else recorded[0] != recorded[1]
        rows.append({"model": model_a["model"], "a": recorded[0], "b": recorded[1], "differs": differs})
    return rows


def _notes(topologies: list[dict[str, Any]]) -> list[str]:
    notes = []
    for row in topologies:
        if row["differs"]:
            notes.append(
                f"{row['model']}: the runs' topologies differ (A: {_topology_text(row['a'])}; "
                f"B: {_topology_text(row['b'])}): per-GPU TPS of different topologies is not the same measurement"
            )
        elif row["differs"] is None:
            missing = " and ".join(side for side in ("A", "B") if row[side.lower()] is None)
            notes.append(
                f"{row['model']}: topology not recorded in {missing} (no run.json): cannot tell if they differ"
            )
    return notes


def _row(model: str, config_id: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    a_tps = a["measured_tps"] if a else None
    b_tps = b["measured_tps"] if b else None
    ratio = b_tps / a_tps if a_tps and b_tps is not None else None
    estimate_a, estimate_b = (estimate_of(a) if a else None), (estimate_of(b) if b else None)
    ci95 = list(intervals.ratio_interval(estimate_b, estimate_a)) if estimate_a and estimate_b else None
    return {
        "model": model,
        "config": config_id,
        "a_tps": a_tps,
        "b_tps": b_tps,
        "ratio": ratio,
        "ratio_ci95": ci95,
        "significant": None if ci95 is None else not intervals.holds(ci95, 1.0),
    }


def _speedups(model: str, config_id: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": model,
        "config": config_id,
        "a_speedup": a.get("speedup") if a else None,
        "a_speedup_ci95": a.get("speedup_ci95") if a else None,
        "b_speedup": b.get("speedup") if b else None,
        "b_speedup_ci95": b.get("speedup_ci95") if b else None,
    }


def compare_docs(doc_a: dict[str, Any], doc_b: dict[str, Any]) -> dict[str, Any]:
    """The comparison of two results documents (`report.collect`), A first."""
    configs_a, configs_b = _configs(doc_a), _configs(doc_b)
    # Configs that neither run has (a matrix's configs absent from both folders) are left out.
    keys = [
        key
        for key in dict.fromkeys([*configs_a, *configs_b])
        if any((side.get(key) or {}).get("status", report.MISSING) != report.MISSING for side in (configs_a, configs_b))
    ]
    rows = [
        _row(model, config, configs_a.get((model, config)), configs_b.get((model, config))) for model, config in keys
    ]
    speedups = [
        _speedups(model, config, configs_a.get((model, config)), configs_b.get((model, config)))
        for model, config in keys
        if any((side.get((model, config)) or {}).get("speedup") is not None for side in (configs_a, configs_b))
        and any((side.get((model, config)) or {}).get("tp_type") == "async" for side in (configs_a, configs_b))
    ]
    topologies = _topologies(doc_a, doc_b)
    return {
        "run_a": doc_a["run_dir"],
        "run_b": doc_b["run_dir"],
        "configs": rows,
        "speedups": speedups,
        "topologies": topologies,
        "notes": _notes(topologies),
        "method": METHOD,
    }


def compare_runs(run_a: Path, run_b: Path, **collect_kwargs: Any) -> dict[str, Any]:
    return compare_docs(report.collect(run_a, **collect_kwargs), report.collect(run_b, **collect_kwargs))


# ---- render -------------------------------------------------------------------------------------


def _number(value: float | None, spec: str, interval: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = format(value, spec)
    return text + (f" [{interval[0]:{spec}}, {interval[1]:{spec}}]" if interval else "")


def _significant(row: dict[str, Any]) -> str:
    if row["significant"] is None:
        return "cannot tell" if row["ratio"] is not None else "n/a"
    return "**yes**" if row["significant"] else "no"


def render_markdown(doc: dict[str, Any]) -> str:
    a, b = Path(doc["run_a"]).name, Path(doc["run_b"]).name
    lines = [f"# titanbench compare: A = {a}, B = {b}", "", f"A: `{doc['run_a']}`  ", f"B: `{doc['run_b']}`", ""]
    lines += [f"Note: {note}." for note in doc["notes"]] + ([""] if doc["notes"] else [])
    for model in dict.fromkeys(row["model"] for row in doc["configs"]):
        rows = [
            [
                r["config"],
                _number(r["a_tps"], ".1f"),
                _number(r["b_tps"], ".1f"),
                _number(r["ratio"], ".3f", r["ratio_ci95"]),
                _significant(r),
            ]
            for r in doc["configs"]
            if r["model"] == model
        ]
        header = ["Config", "A TPS", "B TPS", "B / A [95% interval]", "Significant at 5%"]
        lines += [f"#### {model}", "", *report._table(header, [":---", "---:", "---:", "---:", ":---"], rows), ""]
        speedups = [
            [
                s["config"],
                _number(s["a_speedup"], ".2f", s["a_speedup_ci95"]),
                _number(s["b_speedup"], ".2f", s["b_speedup_ci95"]),
            ]
            for s in doc["speedups"]
            if s["model"] == model
        ]
        if speedups:
            header = ["Config", "A speedup over vanilla", "B speedup over vanilla"]
            lines += ["Speedups:", "", *report._table(header, [":---", "---:", "---:"], speedups), ""]
    lines += ["### Method", "", doc["method"], ""]
    return "\n".join(lines).rstrip() + "\n"


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"
