"""Shared test settings.

Tests that need an optional part (a Docker engine, a Slurm controller, torchtitan) skip with a
reason on a developer's machine. Under CI (`TITANBENCH_REQUIRE_ALL=1`, set by `.ci/run`) every
such part is installed first, so a skip there means a broken setup: it fails instead.
"""

import os
import subprocess
from pathlib import Path

import pytest

REQUIRE_ALL = os.environ.get("TITANBENCH_REQUIRE_ALL") == "1"


def skip_on_this_hardware(reason: str) -> None:
    """Skip a test that cannot apply to this machine's hardware (one that asserts what happens without a
    GPU, run on a GPU host): CI allows these skips, since no install could make the test apply."""
    pytest.skip(f"{HARDWARE_SKIP}{reason}")


HARDWARE_SKIP = "not applicable on this hardware: "


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    hardware = HARDWARE_SKIP in str(report.longrepr)
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail") and not hardware:
        report.outcome = "failed"
        report.longrepr = f"skipped under TITANBENCH_REQUIRE_ALL=1 (CI must run every test): {report.longrepr}"


REPO_ROOT = Path(__file__).resolve().parent.parent
# torchtitan's tree at the pin, as a git bundle beside the project (see its README): test data only.
TORCHTITAN_BUNDLE_DIR = REPO_ROOT.parent / "shared" / "torchtitan"


@pytest.fixture(scope="session")
def torchtitan_checkout(tmp_path_factory) -> Path:
    """A torchtitan checkout at the pin (tomls, test tokenizer, c4_test), cloned from the shared bundle."""
    bundles = sorted(TORCHTITAN_BUNDLE_DIR.glob("*.bundle"))
    if not bundles:
        pytest.skip(f"no torchtitan bundle in {TORCHTITAN_BUNDLE_DIR}: tests on torchtitan's own tree cannot run")
    checkout = tmp_path_factory.mktemp("torchtitan") / "torchtitan"
    subprocess.run(["git", "clone", "-q", str(bundles[0]), str(checkout)], check=True)
    return checkout
