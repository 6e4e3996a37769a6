import json
from dataclasses import asdict

import click

from titanbench import settings
from titanbench.doctor import FAIL, OK, WARN, plan_scales, run_checks
from titanbench.redact import known_secrets, scrub

# What proves a node beyond what doctor can read: all six configs for real, in minutes.
SMOKE_PREFLIGHT = (
    "`titanbench run --model smoke` trains torchtitan's debug model in all six configs on this node "
    "(symmetric memory, float8 kernels, NCCL) in minutes: run it before the cluster run"
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--no-gpu", is_flag=True, help="Skip the GPU and RDMA hardware checks (login nodes, CI).")
@click.option(
    "--pins", "pins_only", is_flag=True,
    help="Only check torch/torchao/torchtitan against pin/versions.env and parse the published configs.",
)  # fmt: skip
@click.option(
    "--expect-gpus", type=click.IntRange(min=1), envvar=settings.EXPECT_GPUS, show_envvar=True,
    help="GPUs per node the plan needs (a mismatch fails); default: warn unless 8, as the reference.",
)  # fmt: skip
@click.option(
    "--model", default="all", show_default=True, envvar=settings.MODEL, show_envvar=True,
    help="The plan's model (id, alias, 'all' or a spec file), for the data checks.",
)  # fmt: skip
@click.option(
    "--nodes", type=click.IntRange(min=1),
    help="The plan's node count, for the data checks [default: the scheduler's, else the published one].",
)  # fmt: skip
def doctor(
    as_json: bool, no_gpu: bool, pins_only: bool, expect_gpus: int | None, model: str, nodes: int | None
) -> None:
    """Check this node before burning GPU hours; exit 1 if any check FAILs.

    Hardware (GPUs, NVLink, power cap, clocks, RDMA), container limits (ulimit -l, /dev/shm),
    NCCL, known-bad variables, the pinned stack, the tokenizer under ./assets, the C4 data
    (hub, or the copy named by TITANBENCH_DATASET_PATH), the Hugging Face token (never shown)
    and free disk. The torchtitan checkout is read from TITANBENCH_TORCHTITAN_DIR. The data checks
    judge the plan of --model on --nodes: streaming C4 on many nodes, or a staged copy whose shard
    count does not split evenly over the data-parallel ranks, warns.

    \b
    Examples:
      titanbench doctor
      titanbench doctor --no-gpu --json
      titanbench doctor --pins --no-gpu     # last step of the image build
      titanbench doctor --model 8b --nodes 1
    """
    scales = () if pins_only else tuple(plan_scales(model, nodes))
    checks = run_checks(gpu=not no_gpu, pins_only=pins_only, expect_gpus=expect_gpus, scales=scales)
    counts = {status: sum(c.status == status for c in checks) for status in (OK, WARN, FAIL)}
    secrets = known_secrets()
    if as_json:
        payload = {"ok": counts[FAIL] == 0, "counts": counts, "checks": [asdict(c) for c in checks]}
        click.echo(scrub(json.dumps(payload, indent=2), secrets))
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            click.echo(scrub(f"{check.status:<4}  {check.name:<{width}}  {check.detail}", secrets))
            if check.fix:
                click.echo(scrub(f"{'':<4}  {'':<{width}}  fix: {check.fix}", secrets))
        if not pins_only and not counts[FAIL]:
            click.echo(f"next: {SMOKE_PREFLIGHT}")
        click.echo(f"doctor: {counts[FAIL]} FAIL, {counts[WARN]} WARN, {counts[OK]} OK")
    raise SystemExit(1 if counts[FAIL] else 0)
