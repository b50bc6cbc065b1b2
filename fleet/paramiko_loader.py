"""Loads paramiko without `invoke`; imported by fleet.transport just before paramiko.

paramiko.config imports invoke, a task runner, for one thing only: running the
commands of `Match exec` lines in an ssh_config file, which fleet never reads.
It was two fifths of paramiko's import time, paid by every `fleet` command that
connects before its first connection (#19). While paramiko loads, invoke is
hidden; afterwards it can be imported again as usual.
"""

from __future__ import annotations

import sys


def load() -> None:
    if "paramiko" in sys.modules or "invoke" in sys.modules:
        return  # loaded already: nothing to save, nothing to hide
    sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` fails
    try:
        import paramiko  # noqa: F401
    finally:
        if sys.modules.get("invoke", 0) is None:
            del sys.modules["invoke"]


load()
