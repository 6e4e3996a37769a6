"""Where the bundled data lives: inside the wheel, or in the checkout the package runs from."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_root() -> Path:
    """The folder holding `runs/` and `versions.env`: `_data/` in a wheel, the repo root in a checkout."""
    bundled = _PACKAGE / "_data"
    if bundled.is_dir():
        return bundled
    return _PACKAGE.parent.parent


def runs_dir() -> Path:
    return data_root() / "runs"


def versions_env() -> Path:
    root = data_root()
    return root / "versions.env" if (root / "versions.env").is_file() else root / "pin" / "versions.env"
