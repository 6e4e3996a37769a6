"""Shared test settings.

Tests that need an optional part (a Docker engine, a Slurm controller, torchtitan) skip with a
reason on a developer's machine. Under CI (`TITANBENCH_REQUIRE_ALL=1`, set by `.ci/run`) every
such part is installed first, so a skip there means a broken setup: it fails instead.
"""

import os

import pytest

REQUIRE_ALL = os.environ.get("TITANBENCH_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under TITANBENCH_REQUIRE_ALL=1 (CI must run every test): {report.longrepr}"
