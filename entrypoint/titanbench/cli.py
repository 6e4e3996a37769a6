"""The `titanbench` command line. Thin: each command lives in its own module under
`titanbench.commands` and is imported only when it runs, so `titanbench --help` stays fast
and never imports torch, matplotlib or docker."""

import importlib

import click

from titanbench import __version__

# name -> "module:attribute" of the click command.
COMMANDS = {
    "plan": "titanbench.commands.plan:plan",
    "run": "titanbench.commands.run:run",
    "parse": "titanbench.commands.parse:parse",
    "report": "titanbench.commands.report:report",
    "compare": "titanbench.commands.compare:compare",
    "doctor": "titanbench.commands.doctor:doctor",
    "env": "titanbench.commands.env:env",
    "assets": "titanbench.commands.assets:assets",
    "docker": "titanbench.commands.docker:docker",
    "deploy": "titanbench.commands.deploy:deploy",
}

SUMMARIES = {
    "plan": "Expand a matrix into the exact torchrun + torchtitan launches.",
    "run": "Run a matrix through torchrun, with crash-safe, resumable results.",
    "parse": "Parse a torchtitan log into metric windows and averages.",
    "report": "Render a run directory next to the published table.",
    "compare": "Compare two run directories: B / A per config, with 95% intervals.",
    "doctor": "Check a node before burning GPU hours.",
    "env": "Print the environment manifest recorded with every run.",
    "assets": "Stage the tokenizer and the C4 data for offline clusters.",
    "docker": "Start the benchmark container on this host (Docker SDK).",
    "deploy": "Render Slurm and Kubernetes launch files.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUMMARIES[name]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="titanbench")
def main() -> None:
    """Reproduce the PyTorch team's June 2025 async tensor-parallel benchmark
    (Llama 3.1 8B on 64 GPUs, 70B on 256 GPUs) and compare with the published table.

    \b
    Example:
      titanbench plan --model 70b
      titanbench run --model 8b --nodes 1 --tp 4
      titanbench report results/<run-id>
    """
