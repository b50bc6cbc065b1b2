"""Shared pieces of the playbook tests: a project's own operations file and an inventory."""

from __future__ import annotations

from pathlib import Path

# A project's operations (playbooks/operations/labops.py): cheap, real device reads.
LAB_OPS = '''
from fleet.agent import agent_for
from fleet.play.operations import OpContext, Outcome, operation


@operation("lab.probe")
def probe(ctx: OpContext, *, fail_on: list[str] = [], marks: str = "", label: str = "") -> Outcome:
    """One `fleet-agent info` on the device; fails on the hosts named in fail_on.

    marks: a file that gets one line per run (device and label), written before it returns.
    """
    assert ctx.task is not None and ctx.host is not None
    version = agent_for(ctx.task).info().software
    if marks and not ctx.check:
        with open(marks, "a") as fh:
            fh.write(f"{ctx.host.name} {label}\\n")
    if ctx.host.name in fail_on:
        return Outcome(failed=True, msg=f"asked to fail on {ctx.host.name}")
    if ctx.check:
        return Outcome(changed=True, diff={"label": {"before": None, "after": label}})
    return Outcome(changed=bool(label), data={"software": version})


@operation("lab.note", scope="once")
def note(ctx: OpContext, *, text: str, count: int = 1) -> Outcome:
    if ctx.check:
        return Outcome.unpredictable("cannot tell without writing")
    return Outcome(changed=True, data={"text": text * count})
'''


def write_ops(root: Path) -> None:
    folder = root / "playbooks" / "operations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labops.py").write_text(LAB_OPS)


def write_playbook(root: Path, text: str, name: str = "play.yaml") -> Path:
    path = root / "playbooks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_inventory(root: Path, sites: dict[str, int], canary: str = "") -> None:
    """A static inventory (no devices behind it): enough for checks that never connect."""
    lines = []
    for site, count in sites.items():
        for n in range(1, count + 1):
            name = f"{site}-{n:02d}"
            tags = "[canary]" if name == canary else "[]"
            lines.append(f"{name}:\n  hostname: 127.0.0.1\n  groups: [site-{site}]\n"
                         f"  data: {{site: {site}, hardware: x, arch: aarch64, tags: {tags}}}\n")
    folder = root / "inventories" / "lab"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.yaml").write_text("".join(lines))
    (folder / "groups.yaml").write_text("".join(f"site-{s}: {{data: {{city: {s}}}}}\n"
                                                for s in sites))
    (folder / "defaults.yaml").write_text("data: {owner: ops}\n")
