"""Ansible host patterns over an inventory: groups, sites, tags and device names.

A pattern is terms separated by ``:`` (or ``,``). A plain term adds the devices
it names (union), ``&term`` keeps only devices it also names (intersection),
``!term`` removes the devices it names (exclusion). As in Ansible, the order of
terms does not matter: unions first, then intersections, then exclusions. A
term is ``all`` (or ``*``), a device name, a group, a site (``berlin`` or its
group ``site-berlin``) or a tag, and may hold ``*``/``?`` wildcards.

A term that names nothing in the inventory is refused (a typo would otherwise
silently target no device).

>>> hosts = [Target("b-1", frozenset({"site-b"}), "b", frozenset({"canary"})),
...          Target("m-1", frozenset({"site-m"}), "m", frozenset())]
>>> [t.name for t in select("all:!canary", hosts)]
['m-1']
>>> [t.name for t in select("b*:&canary", hosts)]
['b-1']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from fleet.errors import ConfigError

_TERM = re.compile(r"^[A-Za-z0-9_.*?\[\]-]+\Z")


class PatternError(ConfigError):
    """A host pattern that cannot be read or names nothing in the inventory."""


@dataclass(frozen=True)
class Target:
    """What a pattern can name about one device."""

    name: str
    groups: frozenset[str]
    site: str
    tags: frozenset[str]

    def labels(self) -> frozenset[str]:
        return frozenset({self.name, self.site, *self.groups, *self.tags})


@dataclass(frozen=True)
class Term:
    op: str  # "+" union, "&" intersection, "!" exclusion
    word: str


def parse(pattern: str) -> list[Term]:
    """The terms of `pattern`; PatternError when a term is empty or holds odd characters."""
    terms = []
    for raw in re.split(r"[:,]", pattern.strip()):
        word = raw.strip()
        op = word[:1] if word[:1] in ("&", "!") else "+"
        word = word[1:] if op != "+" else word
        if not word or not _TERM.match(word):
            raise PatternError(f"bad host pattern {pattern!r}: term {raw.strip()!r} is not a "
                               "name, group, site or tag",
                               fix="write terms like `all`, `site-berlin:&canary`, `all:!berlin-01`")
        terms.append(Term(op, word))
    return terms


def _named(word: str, targets: Sequence[Target]) -> set[str]:
    if word in ("all", "*"):
        return {t.name for t in targets}
    return {t.name for t in targets if any(fnmatchcase(label, word) for label in t.labels())}


def select(pattern: str, targets: Sequence[Target], *, strict: bool = True) -> list[Target]:
    """The targets `pattern` names, in inventory order. `strict`: refuse a term naming nothing."""
    terms = parse(pattern)
    named = {term: _named(term.word, targets) for term in terms}
    if strict:
        for term, names in named.items():
            if not names:
                raise PatternError(f"bad host pattern {pattern!r}: {term.word!r} names no "
                                   "device, group, site or tag in the inventory",
                                   fix="check it against `fleet inventory list`")
    chosen = set().union(*(n for t, n in named.items() if t.op == "+")) if any(
        t.op == "+" for t in terms) else {t.name for t in targets}
    for term in terms:
        if term.op == "&":
            chosen &= named[term]
    for term in terms:
        if term.op == "!":
            chosen -= named[term]
    return [t for t in targets if t.name in chosen]


def targets_of(hosts: Iterable[object]) -> list[Target]:
    """Targets for Nornir hosts: every (parent) group, the site and the tags."""
    from fleet.rollout.batches import describe_host

    out = []
    for host in hosts:
        member = describe_host(host)
        groups = frozenset(g.name for g in getattr(host, "extended_groups", list)())
        out.append(Target(member.name, groups, member.site, member.tags))
    return out
