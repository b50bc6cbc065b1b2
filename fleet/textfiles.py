"""Reading a hand-written text file safely: a regular file, size capped, UTF-8.

Kept apart from `fleet.schema` so that a command reading a cached inventory (whose
digest needs the files' text, not their parse) does not pay for importing the YAML
and JSON-schema libraries (#19).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fleet.errors import ConfigError

# Every YAML file we read is written by hand: inventories, recipes, policies and
# fleet.yaml. 8 MiB holds an inventory of tens of thousands of hosts, and
# refusing aliases keeps the parsed document no larger than the file.
MAX_YAML_BYTES = 8 << 20


def read_text_capped(path: Path, limit: int = MAX_YAML_BYTES) -> str:
    """A regular file's UTF-8 text, refused (ConfigError) when larger than `limit` bytes.

    Opened without blocking so a FIFO in place of the file cannot hang the CLI.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {path}", fix="check the path") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", fix="check the path") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path} is not a regular file", fix="point at a file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{path} is larger than {limit} bytes", fix="split or shorten it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (bad byte at offset {exc.start})",
                          fix="save the file as UTF-8") from exc
