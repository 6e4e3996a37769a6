"""The command line as a whole: every command is listed, documented with an example, and light to start."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from titanbench.cli import COMMANDS, main

HEAVY = ("torch", "matplotlib", "docker")


def test_every_command_is_listed():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_has_an_example(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert "titanbench " + name in result.output


@pytest.mark.parametrize("argv", [["--help"], ["plan", "--help"], ["parse", "--help"], ["report", "--help"]])
def test_light_commands_do_not_import_heavy_modules(argv):
    probe = (
        "import sys\n"
        "from titanbench.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
