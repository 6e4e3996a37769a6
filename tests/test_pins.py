"""Every pin is typed once, in pin/: nothing else in the repository types a pinned commit (full or
short), version or base image, except prose in the Markdown docs. And the image's hash-locked
requirements agree with the pins."""

import re
import subprocess
from pathlib import Path

import pytest
import tomllib

from titanbench.pins import pins

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "pin" / "requirements-torchtitan.txt"
LOCK_INPUT = ROOT / "pin" / "requirements-torchtitan.in"
# Recorded fixtures (real logs) hold what the software printed, not what someone typed.
EXEMPT_DIRS = ("pin/", "tests/data/")
SHORTEST_SHA = 7


def pin_patterns() -> dict[str, re.Pattern[str]]:
    """key -> a pattern that finds its value typed in text."""
    patterns = {}
    for key, value in pins().items():
        if re.fullmatch(r"[0-9a-f]{40}", value):
            # Any abbreviation of the commit, down to git's shortest.
            patterns[key] = re.compile(rf"(?<![0-9a-f]){value[:SHORTEST_SHA]}", re.IGNORECASE)
        elif key.endswith("_VERSION"):
            # X.Y.Z also catches X.Y.Za0 and X.Y.Z+cu128, not 1X.Y.Z or X.Y.Z1.
            patterns[key] = re.compile(rf"(?<![\w.]){re.escape(value)}(?![\d])")
        elif key.endswith("_IMAGE"):
            patterns[key] = re.compile(re.escape(value))
    return patterns


def repo_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return [
        ROOT / name
        for name in listed
        if name and not name.endswith(".md") and not name.startswith(EXEMPT_DIRS) and (ROOT / name).is_file()
    ]


def test_the_patterns_cover_commits_versions_and_images():
    keys = set(pin_patterns())
    assert {"TORCH_COMMIT", "TORCHAO_COMMIT", "TORCHTITAN_COMMIT", "RELEASE_TORCH_GIT_VERSION"} <= keys
    assert {"RELEASE_TORCH_VERSION", "TYRO_VERSION", "CUDA_DEVEL_IMAGE", "CUDA_RUNTIME_IMAGE"} <= keys


@pytest.mark.parametrize(
    ("key", "text", "found"),
    [
        ("TORCH_COMMIT", "torch @ {v}", True),
        ("TORCH_COMMIT", "short {v7}-dirty", True),
        ("TORCH_COMMIT", "not a prefix: 0{v7}", False),
        ("RELEASE_TORCH_VERSION", "torch=={v}", True),
        ("RELEASE_TORCH_VERSION", "version {v}a0+git", True),
        ("RELEASE_TORCH_VERSION", "cuda 1{v}", False),
        ("TYRO_VERSION", "tyro=={v}", True),
    ],
)
def test_a_pattern_finds_its_value_and_only_it(key, text, found):
    value = pins()[key]
    assert bool(pin_patterns()[key].search(text.format(v=value, v7=value[:SHORTEST_SHA]))) is found


def test_nothing_outside_pin_types_a_pin():
    files = repo_files()
    assert ROOT / "Dockerfile" in files and ROOT / "entrypoint" / "titanbench" / "pins.py" in files
    offences = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for key, pattern in pin_patterns().items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                offences.append(f"{path.relative_to(ROOT)}:{line}: types {key} ({match.group()})")
    assert not offences, "read pins from pin/versions.env instead:\n" + "\n".join(offences)


def lock_requirements() -> dict[str, str]:
    """name -> pinned version of the lock, asserting every entry is exact and hashed."""
    entries = re.split(r"\n(?=[a-z0-9])", LOCK.read_text().split("\n", 2)[2].strip())
    locked = {}
    for entry in entries:
        match = re.match(r"([a-z0-9][a-z0-9._-]*)==(\S+)", entry)
        assert match, f"not an exact pin: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"no hash for {match.group(1)}"
        locked[match.group(1)] = match.group(2)
    return locked


def normalize(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group()).lower()


def test_lock_pins_tyro_and_leaves_torch_to_the_image():
    locked = lock_requirements()
    assert locked["tyro"] == pins()["TYRO_VERSION"]
    # No torch, nor the CUDA wheels and Triton that torch from PyPI would bring.
    assert not [name for name in locked if name in ("torch", "triton") or re.fullmatch(r"nvidia-.*-cu\d+", name)]


def test_lock_covers_torchtitan_and_titanbench_requirements():
    # The image installs titanbench with --no-deps: the lock must hold all it needs.
    locked = lock_requirements()
    wanted = [line for line in LOCK_INPUT.read_text().splitlines() if line and not line.startswith("#")]
    wanted = [line for line in wanted if "python_version <" not in line]
    wanted += tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {normalize(requirement) for requirement in wanted} <= set(locked)
