"""Order a selection and cut it into batches with Ansible's `serial` semantics.

Exactly what ansible-playbook does (playbook_executor._get_serialized_batches
and pct_to_int): a percentage is of the *whole* selection, rounded down, and
never less than 1; a plain 0 means "all remaining devices"; the last value
repeats until every device has a batch.

>>> batch_sizes([1, "10%", "50%"], 30)
[1, 3, 15, 11]
>>> batch_sizes([2], 5)
[2, 2, 1]
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fleet.rollout.policy import BatchSize, Policy

T = TypeVar("T")


@dataclass(frozen=True)
class Member:
    """What ordering needs to know about a device."""

    name: str
    site: str
    tags: frozenset[str]


def serial_value(value: BatchSize, total: int) -> int:
    """Ansible's pct_to_int: ``int(pct / 100 * total) or 1`` for 'N%', else the number."""
    if isinstance(value, str) and value.endswith("%"):
        return int(int(value[:-1]) / 100.0 * total) or 1
    return int(value)


def batch_sizes(serial: Sequence[BatchSize], total: int) -> list[int]:
    """Sizes of successive batches for `total` devices."""
    sizes, left, index = [], total, 0
    while left > 0:
        size = serial_value(serial[index], total)
        size = left if size <= 0 else min(size, left)
        sizes.append(size)
        left -= size
        index = min(index + 1, len(serial) - 1)
    return sizes


def order(members: Sequence[T], policy: Policy, describe: Callable[[T], Member]) -> list[T]:
    """Apply `policy.order`, then move canaries (any of `policy.canary_tags`) to the front."""
    items = list(members)
    if policy.order == "site-by-site":
        sites: dict[str, list[T]] = {}
        for item in items:
            sites.setdefault(describe(item).site, []).append(item)
        items = [item for group in sites.values() for item in group]
    elif policy.order == "shuffle":
        random.Random(policy.seed).shuffle(items)
    canary = set(policy.canary_tags)
    if canary:
        items.sort(key=lambda item: not (describe(item).tags & canary))  # stable
    return items


def plan(members: Sequence[T], policy: Policy, describe: Callable[[T], Member]) -> list[list[T]]:
    """Ordered batches for `members` under `policy`.

    With ``order: site-by-site`` a batch never spans two sites: it ends where its site
    does (the canaries, first, count as one group), so a failing site stops the rollout
    before the next site is touched; sizes still follow `batches`, one value per batch.
    """
    ordered = order(members, policy, describe)
    if policy.order != "site-by-site":
        out, start = [], 0
        for size in batch_sizes(policy.batches, len(ordered)):
            out.append(ordered[start:start + size])
            start += size
        return out
    canary = set(policy.canary_tags)
    groups: list[list[T]] = []
    last: object = None
    for item in ordered:
        member = describe(item)
        key = ("canary",) if member.tags & canary else ("site", member.site)
        if key != last:
            groups.append([])
            last = key
        groups[-1].append(item)
    out, index, total = [], 0, len(ordered)
    for group in groups:
        start = 0
        while start < len(group):
            size = serial_value(policy.batches[index], total)
            size = len(group) - start if size <= 0 else size
            out.append(group[start:start + size])
            start += size
            index = min(index + 1, len(policy.batches) - 1)
    return out


def describe_host(host: Any) -> Member:
    """Member view of a Nornir Host: site and tags from host.data, site falls back to group."""
    data = host.data if hasattr(host, "data") else {}
    site = data.get("site") or (host.groups[0].name if getattr(host, "groups", None) else "-")
    return Member(name=host.name, site=str(site), tags=frozenset(data.get("tags") or ()))
