import json
from typing import Any

import click

from titanbench.envinfo import manifest
from titanbench.redact import known_secrets, scrub


def _text(m: dict[str, Any]) -> str:
    host = m["host"]
    lines = [f"host: {host['hostname']}  {host['os']}  python {host['python']}  {host['cpus']} CPUs"]
    gpu = m["gpu"]
    if gpu:
        lines.append(f"gpus ({gpu['source']}): driver {gpu['driver_version']}, CUDA {gpu['cuda_driver_version']}")
        lines += [
            f"  GPU{g['index']}: {g['name']}  cc {g['compute_capability']}  {g['power_limit_w']} W  "
            f"SM {g['sm_clock_mhz']}/{g['max_sm_clock_mhz']} MHz  NVLinks {g['nvlink_links']}"
            for g in gpu["gpus"]
        ]
    lines += [f"rdma: {p['device']}/{p['port']} {p['state']} {p['link_layer'] or ''} {p['rate'] or ''}".rstrip()
              for p in m["rdma"] or []]  # fmt: skip
    if m["nccl"]:
        lines.append(f"nccl: {m['nccl']['version']} ({m['nccl']['source']})")
    pins = m["pins"]
    lines.append(f"pins ({pins['mode']} mode):")
    for name, entry in (("torch", pins["torch"]), ("torchao", pins["torchao"]), ("torchtitan", pins["torchtitan"])):
        verdict = {True: "matches", False: "DIFFERS", None: "unknown"}[entry["match"]]
        installed = f"installed {entry['version']}" if entry["version"] else "not installed"
        lines.append(f"  {name}: {verdict} ({installed})")
    if m["container"]:
        lines.append(f"container: {json.dumps(m['container'])}")
    if m["job"]:
        lines.append(f"job: {json.dumps(m['job'])}")
    lines.append("environment:")
    lines += [f"  {name}={value}" for name, value in m["env"].items()]
    lines.append(f"packages: {len(m['packages'])} installed (listed with --json)")
    lines += [f"unavailable: {what}: {why}" for what, why in m["unavailable"].items()]
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The manifest as JSON (what run.json records).")
def env(as_json: bool) -> None:
    """Print the environment manifest recorded with every run.

    Host, GPUs (model, driver, CUDA, power limits, clocks, NVLink matrix), RDMA ports, NCCL,
    installed packages, the pins and whether they match, container and Slurm/Kubernetes job
    identity, and the relevant variables; secret values are masked (the names stay).

    \b
    Examples:
      titanbench env
      titanbench env --json > env.json
    """
    m = manifest()
    text = json.dumps(m, indent=2) if as_json else _text(m)
    click.echo(scrub(text, known_secrets()))
