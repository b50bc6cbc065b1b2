"""The CI skip hooks (tests/ci_skips.py), run on small suites with pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SUITE = '''
import pytest

def test_runs():
    assert True

def test_skips_in_the_body():
    pytest.skip("onnxruntime not installed")

@pytest.fixture
def needs_sshd():
    pytest.skip("sshd not installed")

def test_skips_in_a_fixture(needs_sshd):
    pass

@pytest.mark.ci_may_skip("needs a GPU")
def test_may_skip():
    pytest.skip("no GPU here")

@pytest.mark.ci_may_skip("")
def test_empty_reason_is_no_excuse():
    pytest.skip("no reason given")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False
'''

IMPORT_SKIP = '''
import pytest
ort = pytest.importorskip("a_module_that_is_not_installed")

def test_never_runs():
    pass
'''


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None,
        source: str = SUITE) -> pytest.RunResult:
    pytester.makepyfile(test_suite=source)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest("-p", "ci_skips", "-rA", "-W", "ignore::pytest.PytestAssertRewriteWarning")


def test_outside_ci_skips_stay_skips(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(pytester, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == 0


def test_ci_false_is_not_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    run(pytester, monkeypatch, "false").assert_outcomes(passed=1, skipped=4, xfailed=1)


def test_under_ci_every_unexcused_skip_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(pytester, monkeypatch, "true")
    result.assert_outcomes(passed=1, failed=2, skipped=1, xfailed=1, errors=1)
    assert result.ret == 1
    for line in ("SKIPPED * test_suite.py:*: no GPU here",
                 "FAILED test_suite.py::test_skips_in_the_body - skipped under CI=true: onnxruntime not installed",
                 "FAILED test_suite.py::test_empty_reason_is_no_excuse - skipped under CI=true: no reason given",
                 "ERROR test_suite.py::test_skips_in_a_fixture - skipped under CI=true: sshd not installed",
                 "*ci_may_skip*reason true on every CI machine*"):
        result.stdout.fnmatch_lines([line])


def test_a_skip_at_import_stops_the_run_under_ci(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run(pytester, monkeypatch, None, IMPORT_SKIP).assert_outcomes(skipped=1)
    result = run(pytester, monkeypatch, "true", IMPORT_SKIP)
    assert result.ret != 0
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_suite.py skipped at import under CI=true: could not import*"
                                 "a_module_that_is_not_installed*"])
