"""Host pattern semantics, as a table: pattern -> the devices it names (inventory order)."""

from __future__ import annotations

import pytest

from fleet.play.patterns import PatternError, Target, select

HOSTS = [
    Target("berlin-01", frozenset({"site-berlin"}), "berlin", frozenset({"canary"})),
    Target("berlin-02", frozenset({"site-berlin"}), "berlin", frozenset()),
    Target("munich-01", frozenset({"site-munich", "south"}), "munich", frozenset({"canary"})),
    Target("munich-02", frozenset({"site-munich", "south"}), "munich", frozenset()),
]

TABLE = [
    ("all", ["berlin-01", "berlin-02", "munich-01", "munich-02"]),
    ("*", ["berlin-01", "berlin-02", "munich-01", "munich-02"]),
    ("berlin-02", ["berlin-02"]),
    ("berlin", ["berlin-01", "berlin-02"]),                  # a site
    ("site-munich", ["munich-01", "munich-02"]),             # its group
    ("south", ["munich-01", "munich-02"]),                   # any group
    ("canary", ["berlin-01", "munich-01"]),                  # a tag
    ("berlin:munich-02", ["berlin-01", "berlin-02", "munich-02"]),   # union
    ("berlin,munich-02", ["berlin-01", "berlin-02", "munich-02"]),   # union, comma
    ("all:&canary", ["berlin-01", "munich-01"]),             # intersection
    ("south:&canary", ["munich-01"]),
    ("all:!canary", ["berlin-02", "munich-02"]),             # exclusion
    ("!canary:all", ["berlin-02", "munich-02"]),             # order does not matter
    ("*-01", ["berlin-01", "munich-01"]),                    # wildcard on names
    ("site-*:!munich-0?", ["berlin-01", "berlin-02"]),
    ("berlin:south:&canary:!munich-01", ["berlin-01"]),
    ("&canary", ["berlin-01", "munich-01"]),                 # only intersections: of all
]


@pytest.mark.parametrize(("pattern", "expected"), TABLE)
def test_pattern_names(pattern: str, expected: list[str]) -> None:
    assert [t.name for t in select(pattern, HOSTS)] == expected


@pytest.mark.parametrize("pattern", ["nowhere", "all:!typo", "a::b", "!", "ber lin", "x$y",
                                     "~regex"])
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError, match="bad host pattern"):
        select(pattern, HOSTS)
