"""Policy validation: from YAML files and flags, errors name the location."""

from __future__ import annotations

import pytest

from fleet.errors import ConfigError
from fleet.rollout.policy import Policy, from_flags, load_policy, parse_batches, resolve


def test_defaults_are_ansible_defaults():
    p = Policy()
    assert p.batches == ("100%",) and p.max_fail_percentage is None and p.max_failures is None


def test_yaml_policy_loads(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("batches: [1, '10%', '50%']\nmax_fail_percentage: 20\nmax_failures: 3\n"
                 "concurrency: 4\nper_site_concurrency: 2\norder: site-by-site\n"
                 "canary_tags: [canary]\noffline: wait\noffline_wait: 30\n"
                 "device_timeout: 600\npause_after_batch: true\n")
    p = load_policy(f)
    assert p.batches == (1, "10%", "50%")
    assert (p.max_fail_percentage, p.max_failures, p.concurrency) == (20.0, 3, 4)
    assert (p.per_site_concurrency, p.order, p.canary_tags) == (2, "site-by-site", ("canary",))
    assert (p.offline, p.offline_wait, p.device_timeout, p.pause_after_batch) == (
        "wait", 30, 600, True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("batches: [1, '10x']\n", "policy.yaml:1: $.batches[1]: '10x' is not a device count"),
        ("batches: [1,\n  -2]\n", "policy.yaml:2: $.batches[1]"),
        ("concurrency: 0\n", "policy.yaml:1: $.concurrency: 0 is less than the minimum of 1"),
        ("offline: later\n", "policy.yaml:1: $.offline: 'later' is not one of"),
        ("max_fail_percentage: 120\n", "$.max_fail_percentage: 120 is greater than"),
        ("order: random\n", "$.order: 'random' is not one of"),
        ("batch: [1]\n", "Additional properties are not allowed ('batch' was unexpected)"),
        ("device_timeout: 0\n", "$.device_timeout: 0 is less than or equal to the minimum"),
    ],
)
def test_bad_yaml_names_file_line_and_path(tmp_path, text, needle):
    f = tmp_path / "policy.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_policy(f)
    assert needle in str(err.value)


def test_flags_parse_and_override():
    base = Policy(batches=(1,), concurrency=3)
    p = from_flags(base, {"batches": "1,10%,50%", "max_fail_percentage": 20,
                          "concurrency": None, "canary_tags": ["canary"]})
    assert p.batches == (1, "10%", "50%") and p.max_fail_percentage == 20.0
    assert p.concurrency == 3 and p.canary_tags == ("canary",)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ({"batches": "1,ten"}, "--batches: 'ten' is not a device count or a percentage"),
        ({"max_fail_percentage": 101}, "--max-fail-percentage: 101 is greater than the maximum"),
        ({"concurrency": 0}, "--concurrency: 0 is less than the minimum of 1"),
        ({"offline": "maybe"}, "--offline: 'maybe' is not one of"),
    ],
)
def test_bad_flags_name_the_flag(flags, needle):
    with pytest.raises(ConfigError) as err:
        from_flags(Policy(), flags)
    assert needle in str(err.value)


def test_parse_batches():
    assert parse_batches("1, 10%,100%") == [1, "10%", "100%"]


def test_precedence_project_then_file_then_flags(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("concurrency: 5\nmax_failures: 2\n")
    p = resolve({"concurrency": 2, "order": "shuffle"}, f, {"max_failures": 7})
    assert (p.order, p.concurrency, p.max_failures) == ("shuffle", 5, 7)


def test_project_section_errors_name_fleet_yaml():
    with pytest.raises(ConfigError, match=r"fleet.yaml: rollout: \$.concurrency"):
        resolve({"concurrency": "many"}, None, {})
