import json
import shlex

import click

from titanbench.estimate import CostEstimate, config_line, estimate, matrix_summary, summary_lines
from titanbench.options import RunOptions, locations_from, matrix_options, overrides_from, resolve_device
from titanbench.plan import (
    DEFAULT_MASTER_PORT,
    ConfigPlan,
    Rendezvous,
    build_plan,
    check_with_torchtitan,
    matrix_fingerprint,
)
from titanbench.spec import resolve_models


def _text(plan: ConfigPlan, cost: CostEstimate | None) -> str:
    topo = plan.topology
    published = f"published {plan.published_tps:g} tps" if plan.published_tps else "no published number"
    units = "GPUs" if plan.device == "cuda" else "CPU processes"
    lines = [
        f"== {plan.model} / {plan.config}: {plan.tp_type} TP, {plan.quantization}, {plan.steps} steps, "
        f"{topo.nodes} x {topo.gpus_per_node} {units}, FSDP {topo.fsdp} x TP {topo.tp}, {published}",
        *([f"skipped on {plan.device}: {plan.skip_reason}"] if plan.skip_reason else []),
        "deviations: " + ("; ".join(plan.deviations) if plan.deviations else "none"),
        "bundle flags:",
        *(f"  {b['flag']}  # {b['reason']}" for b in plan.bundle_flags),
        "environment:",
        *(f"  {k}={v}  # {plan.env_reasons[k]}" for k, v in plan.env.items()),
        f"command (in {plan.workdir}):",
        "  " + shlex.join(plan.launcher_argv),
        config_line(cost, plan),
    ]
    return "\n".join(lines)


@click.command()
@matrix_options
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True, help="This node's rank.")
@click.option("--master-addr", default="127.0.0.1", show_default=True, help="Node 0's address.")
@click.option("--master-port", type=click.IntRange(1, 65535), default=DEFAULT_MASTER_PORT, show_default=True)
@click.option("--run-id", default="RUN_ID", show_default=True, help="Run id the paths are shown for.")
@click.option("--validate", is_flag=True, help="Require torchtitan's own ConfigManager to parse every config.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def plan(node_rank, master_addr, master_port, run_id, validate, fmt, **values):
    """Expand a matrix into the exact torchrun + torchtitan launch of every config.

    Shows the published flags, the flags the bundle adds (with reasons), the environment and
    every deviation from the published setup, and the expected cost per config and for the
    matrix: wall time and GPU-hours from the published TPS (an estimate: a step takes local
    batch x seq len / (TP x tps) seconds; compile and start-up aside; with --repeat N, N runs of
    each config; with --until-stable, the most it takes). Refuses topologies that
    would not be comparable (FSDP 1 trains in fp32) or cannot fit in GPU memory.

    \b
    Examples:
      titanbench plan --model 70b
      titanbench plan --model 8b --nodes 1 --tp 4 --format json
      titanbench plan --model 70b --repeat 3 --until-stable 1
      titanbench plan --model all --validate
      titanbench plan --model smoke --device cpu
    """
    options = RunOptions.from_click(values)
    specs = resolve_models(options.model)
    plans = build_plan(
        specs,
        overrides_from(options),
        Rendezvous(node_rank, master_addr, master_port),
        locations_from(options, run_id),
        trainer=options.trainer,
        device=resolve_device(options.device, specs),
    )
    notes = check_with_torchtitan(plans, options.torchtitan_dir, required=validate)
    by_model = {spec.model: spec for spec in specs}
    costs = [estimate(p, by_model[p.model], options.torchtitan_dir, options.repeat) for p in plans]
    summary = matrix_summary([c for c in costs if c is not None], plans)
    if fmt == "json":
        configs = [{**p.to_dict(), "estimate": c.to_dict() if c else None} for p, c in zip(plans, costs, strict=True)]
        document = {"fingerprint": matrix_fingerprint(plans), "configs": configs, "estimate": summary, "notes": notes}
        click.echo(json.dumps(document, indent=2))
        return
    click.echo("\n\n".join(_text(p, c) for p, c in zip(plans, costs, strict=True)))
    click.echo("\n" + "\n".join(summary_lines(summary)))
    if options.until_stable is not None:
        click.echo(f"--until-stable {options.until_stable:g}: a config may stop sooner; these costs are the most")
    for note in notes:
        click.echo(f"note: {note}", err=True)
