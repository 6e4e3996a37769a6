"""The image's hash lock holds every runtime requirement of torchtitan at the pin and of titanbench.

Docker-free guard for the class of defect that failed every image build: torchtitan's pyproject
requires `tomli` on every Python while its requirements.txt limits it to older Pythons, and a lock
built from requirements.txt alone left it out, so the image's `pip check` failed at the end of
the build. Requirements are evaluated for the image's Python (PYTHON_VERSION of the pins) on Linux
x86_64; torch is not in the lock (it comes from the image's own wheel). What the locked packages
pull in turn is checked by `pip check` in the smoke venv, installed from this same lock
(tests/test_smoke.py).
"""

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from titanbench.pins import pins

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "pin" / "requirements-torchtitan.txt"
NOT_LOCKED = {"torch"}


def locked_versions(text: str) -> dict[str, str]:
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, flags=re.MULTILINE)
    }


def image_environment() -> dict[str, str]:
    version = pins()["PYTHON_VERSION"]
    return {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


def requirement_lines(text: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def unmet(requirements: list[str], locked: dict[str, str]) -> list[str]:
    """Requirements that apply on the image's Python and are missing from the lock or not satisfied by it."""
    environment = image_environment()
    problems = []
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in NOT_LOCKED or (requirement.marker and not requirement.marker.evaluate(environment)):
            continue
        version = locked.get(name)
        if version is None:
            problems.append(f"{line}: not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{line}: the lock has {version}")
    return problems


def torchtitan_requirements(checkout: Path) -> list[str]:
    pyproject = tomllib.loads((checkout / "pyproject.toml").read_text())
    return [*pyproject["project"]["dependencies"], *requirement_lines((checkout / "requirements.txt").read_text())]


def titanbench_requirements() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_lock_holds_every_runtime_requirement_of_torchtitan_at_the_pin(torchtitan_checkout):
    assert unmet(torchtitan_requirements(torchtitan_checkout), locked_versions(LOCK.read_text())) == []


def test_lock_holds_every_requirement_of_titanbench():
    assert unmet(titanbench_requirements(), locked_versions(LOCK.read_text())) == []


def test_a_requirement_the_lock_lost_is_named(torchtitan_checkout):
    """The defect that failed every build: tomli resolved away by requirements.txt's marker."""
    without_tomli = re.sub(r"^tomli==.*$", "", LOCK.read_text(), flags=re.MULTILINE)
    assert unmet(torchtitan_requirements(torchtitan_checkout), locked_versions(without_tomli)) == [
        "tomli>=1.1.0: not in the lock"
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        # requirements.txt's marker, which does not apply on the image's Python
        (f'tomli >= 1.1.0 ; python_version < "{pins()["PYTHON_VERSION"]}"', None),
        ("tyro>=99", f"tyro>=99: the lock has {pins()['TYRO_VERSION']}"),
    ],
)
def test_markers_and_versions_are_evaluated_for_the_image(line, problem):
    assert unmet([line], locked_versions(LOCK.read_text())) == ([problem] if problem else [])
