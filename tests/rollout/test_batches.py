"""Batching is Ansible's `serial`, exactly: a table of cases worked out from
ansible-core's playbook_executor._get_serialized_batches and pct_to_int."""

from __future__ import annotations

import pytest

from fleet.rollout.batches import Member, batch_sizes, order, plan, serial_value
from fleet.rollout.policy import Policy


@pytest.mark.parametrize(
    ("serial", "total", "sizes"),
    [
        (["100%"], 9, [9]),
        ([1], 3, [1, 1, 1]),
        ([2], 5, [2, 2, 1]),
        ([1, "10%", "50%"], 30, [1, 3, 15, 11]),  # % of the whole selection; last repeats
        ([1, "10%", "50%"], 9, [1, 1, 4, 3]),  # 10% of 9 = 0.9 -> floor 0 -> at least 1
        ([1, "30%", "100%"], 30, [1, 9, 20]),
        (["0%"], 3, [1, 1, 1]),  # "0%" is at least 1
        ([0], 4, [4]),  # a plain 0 means every remaining device
        ([1, 0], 4, [1, 3]),
        ([5], 2, [2]),
        (["33%"], 10, [3, 3, 3, 1]),
        ([1, "10%", "100%"], 0, []),
    ],
)
def test_batch_sizes_follow_ansible_serial(serial, total, sizes):
    assert batch_sizes(serial, total) == sizes


def test_percentage_floors_then_never_below_one():
    assert serial_value("10%", 19) == 1
    assert serial_value("10%", 20) == 2
    assert serial_value("99%", 1) == 1


MEMBERS = [
    Member("a1", "a", frozenset()), Member("b1", "b", frozenset({"canary"})),
    Member("a2", "a", frozenset()), Member("c1", "c", frozenset()),
    Member("b2", "b", frozenset()), Member("a3", "a", frozenset({"canary"})),
]


def names(items):
    return [m.name for m in items]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Policy(), ["a1", "b1", "a2", "c1", "b2", "a3"]),
        (Policy(order="site-by-site"), ["a1", "a2", "a3", "b1", "b2", "c1"]),
        (Policy(canary_tags=("canary",)), ["b1", "a3", "a1", "a2", "c1", "b2"]),
        (Policy(order="site-by-site", canary_tags=("canary",)),
         ["a3", "b1", "a1", "a2", "b2", "c1"]),
    ],
)
def test_order(policy, expected):
    assert names(order(MEMBERS, policy, lambda m: m)) == expected


def test_shuffle_is_a_permutation_fixed_by_the_seed():
    first = names(order(MEMBERS, Policy(order="shuffle", seed=7), lambda m: m))
    again = names(order(MEMBERS, Policy(order="shuffle", seed=7), lambda m: m))
    other = [names(order(MEMBERS, Policy(order="shuffle", seed=s), lambda m: m)) for s in range(8)]
    assert first == again and sorted(first) == sorted(names(MEMBERS))
    assert len({tuple(o) for o in other}) > 1


def test_plan_cuts_the_ordered_selection():
    policy = Policy(batches=(1, "50%"), canary_tags=("canary",))
    assert [names(b) for b in plan(MEMBERS, policy, lambda m: m)] == [
        ["b1"], ["a3", "a1", "a2"], ["c1", "b2"]]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Policy(order="site-by-site", batches=(2,)),
         [["a1", "a2"], ["a3"], ["b1", "b2"], ["c1"]]),
        (Policy(order="site-by-site", batches=(1, "50%")),  # 50% of 6 = 3, cut at each site
         [["a1"], ["a2", "a3"], ["b1", "b2"], ["c1"]]),
        (Policy(order="site-by-site", batches=(1, 0)),  # 0: the rest, of each site
         [["a1"], ["a2", "a3"], ["b1", "b2"], ["c1"]]),
        (Policy(order="site-by-site", batches=(1, "50%"), canary_tags=("canary",)),
         [["a3"], ["b1"], ["a1", "a2"], ["b2"], ["c1"]]),
    ],
)
def test_site_by_site_batches_never_span_two_sites(policy, expected):
    batches = plan(MEMBERS, policy, lambda m: m)
    assert [names(b) for b in batches] == expected
    assert sorted(n for b in batches for n in names(b)) == sorted(names(MEMBERS))
