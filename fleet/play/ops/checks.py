"""``assert``: stop a device whose conditions do not hold (Ansible's ``assert``).

The engine renders each condition with the play's variables before the call, so
the operation sees values: booleans, or the text a template rendered
(``"True"``/``"False"``). Anything else is a mistake in the playbook, refused in
one line. Nothing changes, so check mode is the same as a real run.
"""

from __future__ import annotations

from typing import Any

from fleet.errors import UsageError
from fleet.play.operations import OpContext, Outcome, operation

TRUE = {"true", "yes", "1"}
FALSE = {"false", "no", "0", ""}


@operation("assert")
def assert_(ctx: OpContext, *, that: list[Any], fail_msg: str = "",
            success_msg: str = "") -> Outcome:
    """Fail the device (with `fail_msg`) unless every condition in `that` is true."""
    failing = [i for i, value in enumerate(that) if not truth(value, i)]
    if failing:
        which = ", ".join(f"that[{i}]" for i in failing)
        return Outcome(failed=True, msg=fail_msg or f"assertion failed: {which}",
                       data={"failed": failing})
    return Outcome(msg=success_msg or "all assertions passed")


def truth(value: Any, index: int) -> bool:
    """A condition's value as a boolean; refuses what is not clearly one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise UsageError(f"assert: that[{index}] is {value!r}, not a condition's value",
                     fix="write it as an expression the engine renders, e.g. "
                         "\"{{ result.verdict == 'healthy' }}\"")
