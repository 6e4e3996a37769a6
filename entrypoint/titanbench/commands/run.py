import os
import re
from pathlib import Path

import click

from titanbench import settings
from titanbench.coordinate import DEFAULT_JOIN_TIMEOUT, DEFAULT_LIVENESS_TIMEOUT
from titanbench.errors import TitanbenchError
from titanbench.launch import DEFAULT_GRACE_SECONDS, Limits
from titanbench.nodes import Explicit
from titanbench.options import RunOptions, matrix_options

SECONDS = click.FloatRange(min=0, min_open=True)
# One path component that cannot climb out of the results directory or name it: no `/`, not `.`/`..`.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(value: str | None) -> str | None:
    if value is not None and (not RUN_ID.fullmatch(value) or set(value) == {"."}):
        raise click.BadParameter(
            f"{value!r}: a run id is one plain name under --results (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit)"
        )
    return value


@click.command()
@matrix_options
@click.option("--only", multiple=True, metavar="CONFIG", help="Run only this config id (repeatable).")
@click.option(
    "--run-id",
    callback=lambda _ctx, _param, value: check_run_id(value),
    help="Run directory name under --results: one plain name (letters, digits, . _ -) [default: UTC timestamp].",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="RUN_DIR",
    help="Rerun the configs of RUN_DIR that are not ok, with the plan recorded in its run.json "
    "(a node other than node 0 with node-local results needs no run.json there, but node 0's --model and "
    "topology options).",
)
@click.option("--node-rank", type=click.IntRange(min=0), help="This node's rank [discovered, else 0].")
@click.option("--master-addr", help="Node 0's address [discovered, else 127.0.0.1].")
@click.option(
    "--master-port", type=click.IntRange(1, 65535), help="torchrun's rendezvous port [discovered, else 29500]."
)
@click.option(
    "--coord-port",
    type=click.IntRange(1, 65535),
    help="Port of node 0's driver, where the nodes agree on the plan [default: master port + 1].",
)
@click.option(
    "--join-timeout",
    type=SECONDS,
    default=DEFAULT_JOIN_TIMEOUT,
    show_default=True,
    envvar=settings.JOIN_TIMEOUT,
    show_envvar=True,
    help="Seconds to wait for all nodes' drivers to meet.",
)
@click.option(
    "--liveness-timeout",
    type=SECONDS,
    default=DEFAULT_LIVENESS_TIMEOUT,
    show_default=True,
    envvar=settings.LIVENESS_TIMEOUT,
    show_envvar=True,
    help="Seconds after which a node's driver that sent no heartbeat (died, stopped, unreachable) is lost: every "
    "node notices within this plus a fifth of it, and a running config stops.",
)
@click.option("--config-timeout", type=SECONDS, help="Stop a config after this many seconds (status timeout).")
@click.option("--stall-timeout", type=SECONDS, help="Stop a config that prints nothing for this long (status stalled).")
@click.option(
    "--grace-period",
    type=SECONDS,
    default=DEFAULT_GRACE_SECONDS,
    show_default=True,
    help="Seconds between forwarding SIGTERM/SIGINT to torchrun and SIGKILL.",
)
@click.pass_context
def run(
    ctx: click.Context,
    only,
    run_id,
    resume,
    node_rank,
    master_addr,
    master_port,
    coord_port,
    join_timeout,
    liveness_timeout,
    config_timeout,
    stall_timeout,
    grace_period,
    **options,
):
    """Run a matrix through torchrun, one config after another, on this node.

    Every node runs the same command; node 0 decides which configs run and writes the results.
    A config that fails, hangs or times out gets its status and the matrix goes on; the exit status
    is non-zero if any config is not ok (128+N after signal N). Finished results are never rerun.
    With --repeat N each config runs N times, interleaved (trial 1 of every config, then trial 2, ...).
    With --until-stable PCT a config stops once its average is known to +-PCT% (a deviation).

    \b
    Examples:
      titanbench run --model 8b --nodes 1 --tp 4
      titanbench run --model 8b --only vanilla-bf16 --only async-bf16 --repeat 3
      titanbench run --model 70b --until-stable 1
      srun --nodes 8 --ntasks-per-node 1 titanbench run --model 8b
      titanbench run --model 8b --nodes 2 --node-rank 1 --master-addr node0.example
      titanbench run --resume results/20250613T100000Z
    """
    from titanbench.runner import Request, run_matrix

    if resume and run_id:
        raise TitanbenchError("--run-id and --resume exclude each other: a resumed run keeps its id")
    # Matrix options the user set (not defaults): on --resume they must match the recorded run.
    explicit_sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    given = {name for name in [*options, "only"] if ctx.get_parameter_source(name) in explicit_sources}
    request = Request(
        options=RunOptions.from_click({**options, "only": only}),
        given=frozenset(given),
        run_id=run_id,
        resume=resume,
        explicit=Explicit(node_rank, master_addr, master_port),
        coord_port=coord_port,
        join_timeout=join_timeout,
        liveness_timeout=liveness_timeout,
        limits=Limits(config_timeout, stall_timeout, grace_period),
    )
    # The coordination store's C++ warnings (stack dumps) are not for the console: titanbench says what matters
    # in one line. torch reads this once, when it loads; torchrun gets the environment as it was.
    environ = dict(os.environ)
    os.environ["TORCH_CPP_LOG_LEVEL"] = "ERROR"
    try:
        code = run_matrix(request, environ)
    finally:
        os.environ.pop("TORCH_CPP_LOG_LEVEL")
        os.environ.update(environ)
    ctx.exit(code)
