"""The pins, read from `pin/versions.env` (the only place they are typed)."""

from functools import cache
from pathlib import Path

from titanbench.errors import TitanbenchError
from titanbench.paths import versions_env


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments and blank lines skipped), the subset Make and docker also read."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise TitanbenchError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        values[key] = value
    return values


@cache
def pins() -> dict[str, str]:
    return read_env_file(versions_env())


def stack_pins() -> dict[str, str]:
    """The pins of the benchmark stack, as reports and run.json show them (not the CI-only ones)."""
    return {key: value for key, value in pins().items() if not key.startswith("CI_")}
