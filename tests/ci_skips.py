"""No silent skips in CI: under CI=true a skip is a failure.

A skipped test under CI means a part the suite needs was not installed or not
allowed (sshd, mosquitto, onnxruntime, `mount`), and `make test` would still
exit 0. So when CI is set, every skip — in a test, in a fixture, or at import
(`pytest.importorskip` at module level) — is reported as a failure that names
the reason.

A test may still skip under CI when it carries
`@pytest.mark.ci_may_skip("why")` with a reason that holds on every CI
machine (for example "needs a GPU": CI machines have none). A module-level
skip cannot be excused this way: the module never loaded.

Loaded by tests/conftest.py (`pytest_plugins`); tests/test_ci_skips.py checks it with pytester.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

MARKER = "ci_may_skip"
HOW = f"install what it needs, or mark it @pytest.mark.{MARKER}(\"reason true on every CI machine\")"


def in_ci() -> bool:
    """CI is set to anything but an explicit no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _excused(item: pytest.Item) -> bool:
    marker = item.get_closest_marker(MARKER)
    return bool(marker and marker.args and str(marker.args[0]).strip())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(reason): may skip under CI=true, for a reason true on every CI machine")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail") or _excused(item):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true: {_reason(report.longrepr)}\n{HOW}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} skipped at import under CI=true: {_reason(report.longrepr)}\n{HOW}"
