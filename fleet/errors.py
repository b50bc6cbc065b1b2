"""One exception root for the controller. Messages are one line: what, where, how to fix.

>>> str(FleetError("inventory 'x' not found", where="inventories/x", fix="run `fleet lab up`"))
"inventory 'x' not found (inventories/x); run `fleet lab up`"
"""

from __future__ import annotations


class FleetError(Exception):
    """Expected failure the CLI reports as one line with exit code `exit_code`."""

    exit_code = 1

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.line())

    def line(self) -> str:
        text = self.what
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f"; {self.fix}"
        return printable(text)


def printable(text: str) -> str:
    """`text` on one line: control characters (a newline in a name from a file) as escapes.

    >>> printable("unknown group 'x\\n'")
    "unknown group 'x\\\\n'"
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(FleetError):
    """Bad project configuration, inventory or input file."""

    exit_code = 2


class UsageError(FleetError):
    exit_code = 2


class DeviceError(FleetError):
    """A device-side failure raised outside a Nornir task (inside tasks it is a failed Result)."""


class HostKeyError(DeviceError):
    """Unknown or changed SSH host key: never trusted on first use."""


class AgentCallError(DeviceError):
    """The agent answered ``{"ok": false}`` or something that is not the protocol."""

    def __init__(self, device: str, code: str, message: str) -> None:
        self.device, self.code, self.message = device, code, message
        super().__init__(f"{device}: {code}: {message}")
