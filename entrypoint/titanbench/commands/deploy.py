"""`titanbench deploy slurm|k8s`: render the launch files of one model for a cluster."""

import re
import shlex
from pathlib import Path

import click
from click.core import ParameterSource

from titanbench import settings
from titanbench.atomic import write_text
from titanbench.container import check_image_reference
from titanbench.deploy import COMPILE_CACHES, default_image, target
from titanbench.deploy.k8s import (
    DEFAULT_HF_SECRET,
    DEFAULT_RESULTS_PVC,
    FLAVORS,
    MULTUS_ANNOTATION,
    K8sOptions,
    render_manifest,
)
from titanbench.deploy.slurm import SlurmOptions, render_sbatch
from titanbench.errors import TitanbenchError
from titanbench.redact import redact_argv

# Values written verbatim into a shell script or a #SBATCH line: no quoting, spaces or expansions.
_PLAIN = re.compile(r"^[A-Za-z0-9_.,:@#%+=/-]+$")
# sbatch --time: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]].
_SLURM_TIME = re.compile(r"\d+(?::\d{1,2}){0,2}|\d+-\d{1,2}(?::\d{1,2}){0,2}|UNLIMITED|INFINITE")
# RFC 1123 subdomain: what Kubernetes accepts for namespaces, claims and secrets.
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

MODEL = click.option(
    "--model",
    required=True,
    envvar=settings.MODEL,
    show_envvar=True,
    help="Model id (llama3_8b), alias (8b) or the path of a spec file (every node must see it).",
)
NODES = click.option("--nodes", type=click.IntRange(min=1), help="Node count [default: the published one, 8 or 32].")
OUT = click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the file here instead of printing it."
)
EXTRA = click.argument("extra", nargs=-1, type=click.UNPROCESSED)
COMPILE_CACHE = click.option(
    "--compile-cache",
    type=click.Choice(COMPILE_CACHES),
    default="local",
    show_default=True,
    help="Where each node's Inductor/Triton caches go: local, the node's own /tmp (every job compiles afresh; "
    "hundreds of ranks compiling into one shared directory can stall step 1), or shared, the shared cache "
    "directory (a later job starts warm).",
)


def _plain(option: str, value: str | None) -> str | None:
    if value is not None and not _PLAIN.match(value):
        raise TitanbenchError(f"{option} {value!r}: only letters, digits and _.,:@#%+=/- are allowed here")
    return value


def _slurm_time(value: str | None) -> str | None:
    if value is not None and not _SLURM_TIME.fullmatch(value):
        raise TitanbenchError(
            f"--time {value!r}: not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED)"
        )
    return value


def _dns_name(option: str, value: str) -> str:
    if not _DNS_NAME.match(value):
        raise TitanbenchError(f"{option} {value!r}: not a Kubernetes name (lower-case letters, digits, '-' and '.')")
    return value


def _command_line(ctx: click.Context) -> str:
    """The command-line options as given (--out left out), for the file's header."""
    words = ["titanbench", "deploy", ctx.info_name or ""]
    extra: tuple[str, ...] = ()
    for param in ctx.command.params:
        name = param.name or ""
        if name == "out" or ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if name == "extra":
            extra = value
        elif isinstance(param, click.Option) and param.is_flag:
            words.append(param.opts[0])
        elif isinstance(param, click.Option) and param.multiple:
            words += [word for item in value for word in (param.opts[0], str(item))]
        else:
            words += [param.opts[0], str(value)]
    if extra:
        words += ["--", *extra]
    return shlex.join(redact_argv(words))


def _masked(extra: tuple[str, ...]) -> tuple[str, ...]:
    """The arguments for `titanbench run`, secret-looking values masked: a launch file is shared and kept."""
    masked = tuple(redact_argv(extra))
    if masked != extra:
        click.echo(
            "warning: secret-looking values after `--` are masked (***) in the file: pass secrets through "
            "the environment instead",
            err=True,
        )
    return masked


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        click.echo(text, nl=False)
        return
    write_text(out, text)
    click.echo(f"wrote {out}", err=True)


@click.group()
def deploy() -> None:
    """Render Slurm (pyxis/enroot) and Kubernetes (Kubeflow Trainer, JobSet) launch files.

    Every node runs the same `titanbench run`, which reads its node rank and node 0's address
    from what the scheduler injects. Arguments after `--` are appended to `titanbench run`.

    \b
    Examples:
      titanbench deploy slurm --model 8b --partition gpu --time 04:00:00 --out llama3_8b.sbatch
      titanbench deploy k8s --model 70b --flavor jobset --rdma-resource rdma/ib --out 70b.yaml
    """


@deploy.command(short_help="An sbatch script for Slurm (pyxis/enroot, or a virtualenv).")
@MODEL
@NODES
@click.option(
    "--image",
    envvar=settings.IMAGE,
    show_envvar=True,
    help="Image for pyxis (`registry#repo:tag` or `repo:tag`) [default: the image built from the pins].",
)
@click.option("--sqsh", type=click.Path(dir_okay=False), help="An enroot squashfs on shared storage instead.")
@click.option("--partition", help="#SBATCH --partition.")
@click.option("--account", help="#SBATCH --account.")
@click.option("--time", help="#SBATCH --time, e.g. 04:00:00.")
@click.option("--no-container", is_flag=True, help="Run from a virtualenv on shared storage instead of the image.")
@click.option(
    "--venv",
    type=click.Path(file_okay=False),
    help="The virtualenv for --no-container, same path on every node [default: SUBMIT_DIR/.venv].",
)
@COMPILE_CACHE
@OUT
@EXTRA
def slurm(model, nodes, image, sqsh, partition, account, time, no_container, venv, compile_cache, out, extra):
    """An sbatch script: one task per node with all its GPUs, `titanbench run` on every node.

    The image is pre-pulled on every node first; node 0 is the first host of the allocation,
    at a pinned port. Network (NCCL) settings are listed as commented knobs.

    \b
    Examples:
      titanbench deploy slurm --model 8b --partition gpu --time 04:00:00 --out llama3_8b.sbatch
      titanbench deploy slurm --model 70b --sqsh /shared/titanbench.sqsh --account ml
      titanbench deploy slurm --model 8b --no-container --venv /shared/venv -- --dataset-path /shared/c4
    """
    if no_container and click.get_current_context().get_parameter_source("image") is ParameterSource.ENVIRONMENT:
        image = None
    if image and sqsh:
        raise TitanbenchError("--image and --sqsh are two ways to name the container: give one")
    if no_container and (image or sqsh):
        raise TitanbenchError("--no-container runs without an image: drop --image/--sqsh")
    if venv and not no_container:
        raise TitanbenchError("--venv is for --no-container runs")
    if no_container:
        container = None
    elif sqsh:
        container = _plain("--sqsh", str(Path(sqsh).resolve()))
    else:
        # pyxis names a registry with '#' (registry#name:tag); the rest is Docker's grammar.
        container = image if image and check_image_reference("--image", image.replace("#", "/", 1)) else default_image()
    options = SlurmOptions(
        image=container,
        venv=_plain("--venv", str(Path(venv).resolve())) if venv else None,
        partition=_plain("--partition", partition),
        account=_plain("--account", account),
        time=_slurm_time(time),
        extra=_masked(tuple(extra)),
        command_line=_command_line(click.get_current_context()),
        compile_cache=compile_cache,
    )
    _emit(render_sbatch(target(model, nodes), options), out)


@deploy.command(short_help="A Kubeflow Trainer TrainJob or a JobSet manifest.")
@MODEL
@click.option("--flavor", type=click.Choice(FLAVORS), required=True, help="Kubeflow Trainer TrainJob, or JobSet.")
@NODES
@click.option(
    "--image",
    envvar=settings.IMAGE,
    show_envvar=True,
    help="Image in a registry the cluster pulls from [default: the image built from the pins].",
)
@click.option("--namespace", help="metadata.namespace [default: kubectl's current namespace].")
@click.option(
    "--rdma-resource",
    help="RDMA extended resource of your device plugin, NAME or NAME=COUNT per pod (e.g. rdma/ib).",
)
@click.option(
    "--resource",
    "resources",
    multiple=True,
    metavar="NAME=COUNT",
    help="Another extended resource per pod, e.g. rdma/rdma_shared_device_a=1 (repeatable).",
)
@click.option(
    "--host-network",
    is_flag=True,
    help="Pods on the host network (dnsPolicy ClusterFirstWithHostNet): the host's RoCE/IB netdevs in the pod. "
    "JobSet only; titanbench uses the master port and the next one on every host.",
)
@click.option(
    "--network-annotation",
    metavar="NETWORKS",
    help=f"Secondary networks through Multus: the pods' {MULTUS_ANNOTATION} annotation, e.g. roce-net or "
    "a JSON list (the default pod network carries no RoCE netdev).",
)
@click.option("--node-selector", multiple=True, metavar="KEY=VALUE", help="A node label the pods require (repeatable).")
@click.option(
    "--toleration",
    "tolerations",
    multiple=True,
    metavar="KEY[=VALUE][:EFFECT]",
    help="A taint the pods tolerate, e.g. nvidia.com/gpu:NoSchedule (repeatable; KEY alone: any value).",
)
@COMPILE_CACHE
@click.option(
    "--results-pvc",
    default=DEFAULT_RESULTS_PVC,
    show_default=True,
    help="PersistentVolumeClaim for results/, cache/ and assets/tokenizer/ (shared by all pods).",
)
@click.option(
    "--hf-token-secret",
    default=DEFAULT_HF_SECRET,
    show_default=True,
    help="Secret holding the Hugging Face token under the key `token`.",
)
@OUT
@EXTRA
def k8s(
    model,
    flavor,
    nodes,
    image,
    namespace,
    rdma_resource,
    resources,
    host_network,
    network_annotation,
    node_selector,
    tolerations,
    compile_cache,
    results_pvc,
    hf_token_secret,
    out,
    extra,
):
    """Manifests with one pod per node: 8 GPUs, /dev/shm in memory, IPC_LOCK, the results volume.

    TrainJob (trainer.kubeflow.org/v1alpha1) uses the default `torch-distributed` runtime, whose
    PET_* variables give each pod its node rank; it needs a Trainer release whose TrainJob has
    spec.runtimePatches (older ones: use jobset). JobSet gives the completion index and node 0's
    stable DNS name.

    \b
    Examples:
      titanbench deploy k8s --model 8b --flavor trainjob --out llama3_8b.trainjob.yaml
      titanbench deploy k8s --model 70b --flavor jobset --namespace ml --rdma-resource rdma/ib=1
      titanbench deploy k8s --model 70b --flavor jobset --host-network --toleration nvidia.com/gpu:NoSchedule
    """
    options = K8sOptions(
        image=check_image_reference("--image", image) if image else default_image(),
        flavor=flavor,
        namespace=namespace and _dns_name("--namespace", namespace),
        rdma_resource=rdma_resource,
        results_pvc=_dns_name("--results-pvc", results_pvc),
        hf_secret=_dns_name("--hf-token-secret", hf_token_secret),
        extra=_masked(tuple(extra)),
        resources=tuple(resources),
        host_network=host_network,
        network_annotation=network_annotation,
        node_selector=tuple(node_selector),
        tolerations=tuple(tolerations),
        compile_cache=compile_cache,
    )
    _emit(render_manifest(target(model, nodes), options, _command_line(click.get_current_context())), out)
