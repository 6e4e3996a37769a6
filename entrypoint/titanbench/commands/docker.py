"""`titanbench docker`: start the benchmark container on this host."""

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import click
from click.core import ParameterSource

from titanbench import container, nodes, settings
from titanbench.errors import TitanbenchError
from titanbench.spec import resolve_models
from titanbench.staging import DEFAULT_TOKENIZER_DEST, TOKENIZER_FILE

TOKEN_ENV = "HF_TOKEN"
# `titanbench run`'s placement options and the Placement field each one carries.
PLACEMENT_OPTIONS = (
    ("nodes", "--nodes", "nnodes"),
    ("node_rank", "--node-rank", "node_rank"),
    ("master_addr", "--master-addr", "master_addr"),
    ("master_port", "--master-port", "master_port"),
)


def host_placement(run_command: list[str], env: Mapping[str, str]) -> tuple[tuple[str, ...], nodes.Placement | None]:
    """(flags, placement): where this node sits, found on the host as `titanbench run` finds it, as the
    placement flags `run_command` (the container's `run ...`) does not already give.

    The container sees no scheduler (no SLURM_* nor PET_* variables, no scontrol): without this, every
    node of an allocation would run as node 0 of its own job. With no scheduler here there is nothing
    to find: the flags after `--` reach the container's `run` unchanged."""
    if nodes.scheduler(env) is None:
        return (), None
    from titanbench.commands.run import run
    from titanbench.options import RunOptions
    from titanbench.runner import planned_nodes

    try:
        context = run.make_context("run", run_command[1:])
    except click.ClickException as error:
        raise TitanbenchError(f"the `titanbench run` arguments: {error.format_message()}") from None
    params = context.params
    explicit = nodes.Explicit(params["node_rank"], params["master_addr"], params["master_port"])
    options = RunOptions.from_click({k: v for k, v in params.items() if k in RunOptions.model_fields})
    placement = nodes.discover_placement(env, explicit, planned_nodes(options))
    flags: list[str] = []
    for name, option, field in PLACEMENT_OPTIONS:
        if context.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            flags += [option, str(getattr(placement, field))]
    return tuple(flags), placement


def say_device(device: str, why: str | None) -> None:
    """What `--device auto` chose, on stderr; said only once the inputs are good, so an error stays one line."""
    if why:
        click.echo(f"titanbench docker: --device {device} ({why})", err=True)


def say_placement(placement: nodes.Placement | None) -> None:
    if placement is not None:
        click.echo(f"titanbench docker: {placement.describe()}", err=True)


@click.command()
@click.option("--model", help="Model of the matrix to run (passed to `titanbench run --model`).")
@click.option(
    "--mode",
    type=click.Choice(container.BUILD_MODES),
    help="Which image build the default --image names [default: the one built on this host, source if "
    "present, else release; --print: source].",
)
@click.option(
    "--image",
    envvar=settings.IMAGE,
    show_envvar=True,
    help="Image to run [default: the local tag built by `make image` or `make image-release`, see --mode].",
)
@click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Host directory for the results (mounted at /results).",
)
@click.option(
    "--assets",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_TOKENIZER_DEST,
    show_default=True,
    help="Host directory holding original/tokenizer.model (`titanbench assets tokenizer --dest DIR`); "
    "the default is mounted only when it holds one (the smoke needs none).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Host directory for the Hugging Face and compile caches (mounted at /cache).",
)
@click.option(
    "--hf-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="HF_TOKEN_FILE",
    show_envvar=True,
    help=f"File holding the Hugging Face token; else ${TOKEN_ENV} is used. Never printed.",
)
@click.option(
    "--device",
    type=click.Choice(container.DEVICES),
    default="auto",
    envvar=settings.DEVICE,
    show_envvar=True,
    show_default=True,
    help="cuda: all GPUs, unlimited memlock. cpu: no GPU request and no memlock limit (runs on an engine "
    "without the NVIDIA runtime), RDMA only with --rdma on; for the smoke. auto: cuda when the host has "
    "NVIDIA GPUs (/dev/nvidia0, ...), else cpu. Passed on as `titanbench run --device`.",
)
@click.option(
    "--rdma",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Pass /dev/infiniband and IPC_LOCK; auto: when the host has RDMA devices and the device is cuda.",
)
@click.option("--sys-ptrace", is_flag=True, help="Add CAP_SYS_PTRACE (pidfd_getfd under default seccomp).")
@click.option("--print", "print_only", is_flag=True, help="Print the equivalent `docker run` line only.")
@click.option("--print-image", is_flag=True, help="Print the default image name (see --mode) and exit.")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def docker(
    model: str | None,
    mode: str | None,
    image: str | None,
    results: Path,
    assets: Path,
    cache: Path | None,
    hf_token_file: Path | None,
    device: str,
    rdma: str,
    sys_ptrace: bool,
    print_only: bool,
    print_image: bool,
    run_args: tuple[str, ...],
) -> None:
    """Run `titanbench run` in the benchmark image on this host, with the GPUs (or none: --device
    cpu), host IPC and network, RDMA devices when present, and mounts for results, assets and
    caches. Arguments after `--` go to `titanbench run` inside the container.

    Under a scheduler (Slurm, Kubeflow's PET_*, JobSet), this node's placement is found here, as
    `titanbench run` finds it, and passed in as --nodes/--node-rank/--master-addr/--master-port;
    flags given after `--` win.

    \b
    Example:
      titanbench docker --model 70b --print
      titanbench docker --model 8b --assets ~/llama3-tokenizer --cache /scratch/cache
      titanbench docker --model 70b -- --nodes 32 --node-rank 0 --master-addr node001
      srun --nodes 32 --ntasks-per-node 1 titanbench docker --model 70b
      titanbench docker --model smoke --device cpu -- --run-id first-smoke
    """
    if print_image:
        click.echo(container.image_reference(mode) if mode else container.local_image(container.connect())[0])
        return
    if any(arg == "--device" or arg.startswith("--device=") for arg in run_args):
        raise TitanbenchError("pass --device before `--`: titanbench docker also decides the GPU request by it")
    if image:
        container.check_image_reference("--image", image)
    if model:
        resolve_models(model)  # an unknown model is one error line here, not a container that fails
    for option, path in (("--results", results), ("--assets", assets), ("--cache", cache)):
        if path is not None:
            container.check_host_path(option, path)
    device, why = container.resolve_device(device)
    staged = (assets / TOKENIZER_FILE).is_file()
    if click.get_current_context().get_parameter_source("assets") is ParameterSource.DEFAULT and not staged:
        # Nothing staged at the default: mount nothing (a bind mount would create it, root-owned);
        # `titanbench run` inside says so before any config starts if a matrix needs the tokenizer.
        assets_mount = None
    else:
        assets_mount = assets
    token_in_env = bool(os.environ.get(TOKEN_ENV)) and hf_token_file is None
    options = container.LaunchOptions(
        # --print needs no engine, so it names the source build unless told otherwise.
        image=image or container.image_reference(mode or "source"),
        results=results,
        model=model,
        assets=assets_mount,
        cache=cache,
        hf_token_file=hf_token_file,
        hf_token_from_env=token_in_env and print_only,
        rdma=(device == "cuda" and container.rdma_present()) if rdma == "auto" else rdma == "on",
        sys_ptrace=sys_ptrace,
        device=device,
        run_args=run_args,
    )
    flags, placement = host_placement(options.command(), os.environ)
    options = dataclasses.replace(options, placement=flags)
    if print_only:
        say_device(device, why)
        say_placement(placement)
        click.echo(container.print_line(options))
        return
    if assets_mount is not None and not staged:
        raise TitanbenchError(
            f"no tokenizer at {assets / TOKENIZER_FILE}: run `titanbench assets tokenizer --dest {assets}` "
            "first, or point --assets at the directory holding it"
        )
    client = container.connect()
    if image is None and mode is None:
        found, found_mode = container.local_image(client)
        click.echo(f"titanbench docker: using {found} (the {found_mode} build found here)", err=True)
        options = dataclasses.replace(options, image=found)
    say_device(device, why)
    say_placement(placement)
    for directory in (results, cache):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if token_in_env:
            # The SDK path mounts the token as a file, so it stays out of the container's configuration.
            private = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="titanbench-token-")))
            token_file = private / "hf_token"
            token_file.touch(mode=0o600)
            token_file.write_text(os.environ[TOKEN_ENV])
            options = dataclasses.replace(options, hf_token_file=token_file)
        status = container.run_container(client, options)
    click.get_current_context().exit(status)
