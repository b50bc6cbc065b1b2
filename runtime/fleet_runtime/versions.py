"""How edgefleet orders versions: the one comparison both halves use.

A version is dotted numbers with an optional pre-release (``-rc10``) and build
(``+build7``) suffix, e.g. ``1.2.0-rc10+b3``. Release numbers compare as
numbers with trailing zeros ignored (``1.2`` == ``1.2.0``); a release sorts
after its pre-releases; pre-release tags compare piece by piece, digit runs as
numbers (``rc10`` > ``rc9``), so the text order never decides; build metadata
is ignored. ``packaging.version`` is not used: it is no runtime dependency and
refuses tags this format has always accepted (``1.2.0-beta.x``).

>>> compare("1.2.0-rc10", "1.2.0-rc9"), compare("1.2.0", "1.2.0-rc10")
(1, 1)
>>> sorted(["1.2.0", "1.2.0-rc10", "1.2.0-rc9"], key=key)
['1.2.0-rc9', '1.2.0-rc10', '1.2.0']
"""

from __future__ import annotations

import re

# \Z, not $: "$" also matches before a final newline, and "1.4.0\n" would name a file.
PATTERN = r"^[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.-]+)?\Z"
_VALID = re.compile(PATTERN)
_PIECES = re.compile(r"[0-9]+|[A-Za-z]+")

Piece = tuple[int, int, str]  # (0, number, "") or (1, 0, text): numbers sort before words
Key = tuple[tuple[int, ...], int, tuple[Piece, ...]]


class VersionError(ValueError):
    """Text that is not a version (what and an example are in the message)."""


def key(text: str) -> Key:
    """A sort key: ``(release numbers, 1 for a release / 0 for a pre-release, tag pieces)``."""
    if not isinstance(text, str) or not _VALID.match(text):
        raise VersionError(f"version {text!r} is not dotted numbers like 1.2.0")
    release, _, tag = text.split("+", 1)[0].partition("-")
    numbers = tuple(int(p) for p in release.split("."))
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers = numbers[:-1]
    pieces = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _PIECES.findall(tag))
    return numbers, 0 if tag else 1, pieces


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version `a` is older than, equal to or newer than `b`."""
    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)


def is_valid(text: object) -> bool:
    return isinstance(text, str) and bool(_VALID.match(text))


def older(a: str, b: str) -> bool:
    """Is `a` older than `b`? A text that is no version counts as older than any version."""
    if not is_valid(a):
        return is_valid(b)
    return is_valid(b) and compare(a, b) < 0
