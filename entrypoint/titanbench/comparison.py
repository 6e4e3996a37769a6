"""`titanbench compare`: two run directories side by side, per model and config.

Each run is read exactly as `titanbench report` reads it (`report.collect`: logs alone work), so each
config's average TPS carries its batch-means estimate; B / A gets a 95% interval by the log-scale delta
method (two independent runs, as for a speedup) and is significant at 5% when that interval excludes
1.00. Typical uses: the exact-pin image vs the release image, this cluster vs last month, two NCCL
settings. Runs of different topologies are compared too, and the document says so.
"""

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from titanbench import intervals, report
from titanbench.document import MISSING, ConfigEntry, ReportDocument
from titanbench.spec import Topology
from titanbench.stats import DEFAULT_WARMUP_STEPS

METHOD = (
    "B / A is the ratio of the two runs' average TPS (each averaged as `titanbench report` does). Its 95% "
    "interval: the delta method on the log scale over the two runs' batch-means standard errors (independent "
    "runs; for a config run several times, the mean of its trial averages and their standard error), "
    "Student-t with Welch-Satterthwaite degrees of freedom. Significant at 5%: the interval excludes "
    "1.00; `significant` is null where either run has no interval (fewer than "
    f"{intervals.MIN_WINDOWS} used windows) or no number."
)


class _Entry(BaseModel):
    # The JSON output is a public document: exactly these keys, in this order.
    model_config = ConfigDict(extra="forbid")


class ConfigComparison(_Entry):
    """One config in A and B: their TPS and B / A."""

    model: str
    config: str
    a_tps: float | None
    b_tps: float | None
    ratio: float | None
    ratio_ci95: list[float] | None
    significant: bool | None


class SpeedupComparison(_Entry):
    """An async config's speedup over vanilla TP in A and in B."""

    model: str
    config: str
    a_speedup: float | None
    a_speedup_ci95: list[float] | None
    b_speedup: float | None
    b_speedup_ci95: list[float] | None


class TopologyComparison(_Entry):
    """A model's topology in each run (None: that run recorded none) and whether they differ."""

    model: str
    a: Topology | None
    b: Topology | None
    differs: bool | None


class Comparison(_Entry):
    run_a: str
    run_b: str
    configs: list[ConfigComparison]
    speedups: list[SpeedupComparison]
    topologies: list[TopologyComparison]
    notes: list[str]
    method: str


ConfigKey = tuple[str, str]


def _configs(doc: ReportDocument) -> dict[ConfigKey, ConfigEntry]:
    return {(model.model, c.config): c for model in doc.models for c in model.configs}


def _topology_text(topology: Topology | None) -> str:
    if not topology:
        return "not known"
    return (
        f"{topology.world} GPUs ({topology.nodes} x {topology.gpus_per_node}), FSDP {topology.fsdp} x TP {topology.tp}"
    )


def _topologies(doc_a: ReportDocument, doc_b: ReportDocument) -> list[TopologyComparison]:
    """Per model in both runs: each run's topology and whether they differ (None: a run did not record it)."""
    models_b = {m.model: m for m in doc_b.models}
    rows = []
    for model_a in doc_a.models:
        model_b = models_b.get(model_a.model)
        if model_b is None:
            continue
        a, b = (m.topology if m.topology_source == "run.json" else None for m in (model_a, model_b))
        differs = None if a is None or b is None else a != b
        rows.append(TopologyComparison(model=model_a.model, a=a, b=b, differs=differs))
    return rows


def _notes(topologies: list[TopologyComparison]) -> list[str]:
    notes = []
    for row in topologies:
        if row.differs:
            notes.append(
                f"{row.model}: the runs' topologies differ (A: {_topology_text(row.a)}; "
                f"B: {_topology_text(row.b)}): per-GPU TPS of different topologies is not the same measurement"
            )
        elif row.differs is None:
            missing = " and ".join(side for side, topology in (("A", row.a), ("B", row.b)) if topology is None)
            notes.append(f"{row.model}: topology not recorded in {missing} (no run.json): cannot tell if they differ")
    return notes


def _row(model: str, config_id: str, a: ConfigEntry | None, b: ConfigEntry | None) -> ConfigComparison:
    a_tps = a.measured_tps if a else None
    b_tps = b.measured_tps if b else None
    ratio = b_tps / a_tps if a_tps and b_tps is not None else None
    estimate_a, estimate_b = (a.estimate() if a else None), (b.estimate() if b else None)
    ci95 = list(intervals.ratio_interval(estimate_b, estimate_a)) if estimate_a and estimate_b else None
    return ConfigComparison(
        model=model,
        config=config_id,
        a_tps=a_tps,
        b_tps=b_tps,
        ratio=ratio,
        ratio_ci95=ci95,
        significant=None if ci95 is None else not intervals.holds(ci95, 1.0),
    )


def _speedups(model: str, config_id: str, a: ConfigEntry | None, b: ConfigEntry | None) -> SpeedupComparison:
    return SpeedupComparison(
        model=model,
        config=config_id,
        a_speedup=a.speedup if a else None,
        a_speedup_ci95=a.speedup_ci95 if a else None,
        b_speedup=b.speedup if b else None,
        b_speedup_ci95=b.speedup_ci95 if b else None,
    )


def compare_docs(doc_a: ReportDocument, doc_b: ReportDocument) -> Comparison:
    """The comparison of two results documents (`report.collect`), A first."""
    configs_a, configs_b = _configs(doc_a), _configs(doc_b)
    sides = (configs_a, configs_b)

    def present(key: ConfigKey) -> list[ConfigEntry]:
        return [entry for side in sides if (entry := side.get(key)) is not None]

    # Configs that neither run has (a matrix's configs absent from both folders) are left out.
    keys = [key for key in dict.fromkeys([*configs_a, *configs_b]) if any(c.status != MISSING for c in present(key))]
    rows = [_row(*key, configs_a.get(key), configs_b.get(key)) for key in keys]
    speedups = [
        _speedups(*key, configs_a.get(key), configs_b.get(key))
        for key in keys
        if any(c.speedup is not None for c in present(key)) and any(c.tp_type == "async" for c in present(key))
    ]
    topologies = _topologies(doc_a, doc_b)
    return Comparison(
        run_a=doc_a.run_dir,
        run_b=doc_b.run_dir,
        configs=rows,
        speedups=speedups,
        topologies=topologies,
        notes=_notes(topologies),
        method=METHOD,
    )


def compare_runs(
    run_a: Path, run_b: Path, *, warmup_steps: int = DEFAULT_WARMUP_STEPS, profile_freq: int | None = None
) -> Comparison:
    """Both runs read as `titanbench report` reads them, with the same averaging."""
    doc_a = report.collect(run_a, warmup_steps=warmup_steps, profile_freq=profile_freq)
    doc_b = report.collect(run_b, warmup_steps=warmup_steps, profile_freq=profile_freq)
    return compare_docs(doc_a, doc_b)


# ---- render -------------------------------------------------------------------------------------


def _number(value: float | None, spec: str, interval: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = format(value, spec)
    return text + (f" [{interval[0]:{spec}}, {interval[1]:{spec}}]" if interval else "")


def _significant(row: ConfigComparison) -> str:
    if row.significant is None:
        return "cannot tell" if row.ratio is not None else "n/a"
    return "**yes**" if row.significant else "no"


def render_markdown(doc: Comparison) -> str:
    a, b = Path(doc.run_a).name, Path(doc.run_b).name
    lines = [f"# titanbench compare: A = {a}, B = {b}", "", f"A: `{doc.run_a}`  ", f"B: `{doc.run_b}`", ""]
    lines += [f"Note: {note}." for note in doc.notes] + ([""] if doc.notes else [])
    for model in dict.fromkeys(row.model for row in doc.configs):
        rows = [
            [
                r.config,
                _number(r.a_tps, ".1f"),
                _number(r.b_tps, ".1f"),
                _number(r.ratio, ".3f", r.ratio_ci95),
                _significant(r),
            ]
            for r in doc.configs
            if r.model == model
        ]
        header = ["Config", "A TPS", "B TPS", "B / A [95% interval]", "Significant at 5%"]
        lines += [f"#### {model}", "", *report._table(header, [":---", "---:", "---:", "---:", ":---"], rows), ""]
        speedups = [
            [s.config, _number(s.a_speedup, ".2f", s.a_speedup_ci95), _number(s.b_speedup, ".2f", s.b_speedup_ci95)]
            for s in doc.speedups
            if s.model == model
        ]
        if speedups:
            header = ["Config", "A speedup over vanilla", "B speedup over vanilla"]
            lines += ["Speedups:", "", *report._table(header, [":---", "---:", "---:"], speedups), ""]
    lines += ["### Method", "", doc.method, ""]
    return "\n".join(lines).rstrip() + "\n"


def render_json(doc: Comparison) -> str:
    return json.dumps(doc.model_dump(mode="json"), indent=2) + "\n"
