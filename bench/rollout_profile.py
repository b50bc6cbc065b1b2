"""Where one `fleet ota rollout` spends its time, per device (issue 19.5).

Run: .venv/bin/python bench/rollout_profile.py [--devices 9] [--mb 20] [--ansible]

Builds the bench's release bundle and lab (bench/rollout_vs_ansible.py), then runs
`fleet ota rollout --batches 1,30%,100% --concurrency 10` in this process and prints,
per device, when each SSH connection opened, each agent call and power cycle ran and
each bundle stream went out (OpenSSH), with the counts per device. With root and a
cgroup-v1 ``cpuacct`` hierarchy, the whole process tree runs in a cgroup of its own,
so the CPU printed is everything the rollout cost this machine: the controller, the
lab's SSH servers and logins, every agent and every lab reboot (else only the
controller's, from getrusage). ``--ansible`` then runs the bench's Ansible play on a
fresh lab and prints its CPU per device the same way. Not a test: figures vary with
the machine's load, printed beside them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rollout_vs_ansible as bench  # noqa: E402

from fleet.lab import Lab  # noqa: E402

CGROUP = Path("/sys/fs/cgroup/cpuacct") / f"edgefleet-bench-{os.getpid()}"
EVENTS: list[tuple[float, str, str]] = []
_LOCK = threading.Lock()
_CURRENT = threading.local()  # the device whose bundle the system's ssh is sending
_START = [time.monotonic()]  # event times are seconds since the rollout started


def note(device: str, what: str) -> None:
    with _LOCK:
        EVENTS.append((time.monotonic() - _START[0], device, what))


def instrument() -> None:
    """Wrap the controller's connection, exec, stream and power-cycle entry points."""
    import fleet.reboot as reboot
    import fleet.transport as transport

    connect = transport.SSHSession.connect.__func__  # type: ignore[attr-defined]

    def connecting(cls: Any, device: str, *args: Any, **kwargs: Any) -> Any:
        note(device, "connect")
        session = connect(cls, device, *args, **kwargs)
        plain_exec, plain_file = session.exec, session.exec_file

        def exec_(argv: list[str], **kw: Any) -> Any:
            note(device, f"exec {' '.join(argv[1:2])}")
            return plain_exec(argv, **kw)

        def exec_file(argv: list[str], *a: Any, **kw: Any) -> Any:
            _CURRENT.device = device  # small files go over `exec`, large ones OpenSSH's
            return plain_file(argv, *a, **kw)

        def dialogue(argv: list[str], **kw: Any) -> Any:
            note(device, "session")
            return transport.SSHSession.dialogue(session, argv, **kw)

        session.exec, session.exec_file, session.dialogue = exec_, exec_file, dialogue
        return session

    transport.SSHSession.connect = classmethod(connecting)  # type: ignore[method-assign,assignment]
    send = transport.send_file

    def sending(command: list[str], *args: Any, **kwargs: Any) -> Any:
        note(getattr(_CURRENT, "device", "?"), f"openssh {command[-1].split()[1]}")
        return send(command, *args, **kwargs)

    transport.send_file = sending
    cycle = reboot.CommandRestarter.reboot

    def power_cycle(self: Any, task: Any) -> None:
        note(task.host.name, "power cycle")
        cycle(self, task)
        note(task.host.name, "back")

    reboot.CommandRestarter.reboot = power_cycle  # type: ignore[method-assign]


def cpu_meter() -> Any:
    """A function returning CPU seconds so far: of this process tree's cgroup when one can
    be made, else of this process and its waited-for children."""
    with contextlib.suppress(OSError):
        CGROUP.mkdir()
        (CGROUP / "cgroup.procs").write_text(str(os.getpid()))
        return lambda: int((CGROUP / "cpuacct.usage").read_text()) / 1e9, "whole tree (cgroup)"

    def rusage() -> float:
        me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                    resource.RUSAGE_CHILDREN))
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    return rusage, "controller only (no cgroup)"


def run_fleet(root: Path, bundle: Path) -> dict[str, Any]:
    from fleet.cli import main as cli

    sys.argv = ["fleet", "--project", str(root), "--no-color", "ota", "rollout", str(bundle),
                "-i", "lab", "--batches", "1,30%,100%", "--concurrency", "10", "--json"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.main()
    return dict(json.loads(out.getvalue().splitlines()[-1])["report"])


def print_devices() -> None:
    per: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    for at, device, what in EVENTS:
        per[device].append((at, what))
    for device, events in sorted(per.items()):
        counts = collections.Counter(what.split()[0] for _, what in events)
        print(f"{device}: {counts['connect']} SSH connections by paramiko and "
              f"{counts['openssh']} by OpenSSH, "
              f"{counts['exec'] + counts['openssh'] + counts['session']} agent starts "
              f"({counts['session']} of them a session), {counts['power']} power cycles")
        print("   " + "  ".join(f"{at:6.2f} {what}" for at, what in events))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=9)
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--ansible", action="store_true", help="then the Ansible play, for its CPU")
    args = parser.parse_args()
    os.environ.setdefault("FLEET_RELEASE_PASSPHRASE", bench.SECRET)
    used, what = cpu_meter()
    project, bundle = bench.setup(args.devices, args.mb)
    try:
        bench.fresh_lab(project, args.devices)
        instrument()
        load, cpu, start = os.getloadavg()[0], used(), time.monotonic()
        _START[0] = start
        report = run_fleet(project.root, bundle)
        wall, cpu = time.monotonic() - start, used() - cpu
        print(f"fleet: {report['counts']}, {wall:.1f} s, CPU {what} {cpu:.2f} s = "
              f"{cpu / args.devices:.2f} s per device (load {load:.1f} -> "
              f"{os.getloadavg()[0]:.1f})")
        print_devices()
        if args.ansible:
            bench.peer_venv("ansible-core")
            lab = bench.fresh_lab(project, args.devices)
            load, cpu = os.getloadavg()[0], used()
            wall = bench.run_ansible(lab, bundle, 10)
            cpu = used() - cpu
            print(f"ansible-playbook: {wall:.1f} s, CPU {what} {cpu:.2f} s = "
                  f"{cpu / args.devices:.2f} s per device (load {load:.1f})")
    finally:
        bench.stop_lab(Lab(project))
        with contextlib.suppress(OSError):  # this process leaves it; then it can go
            Path("/sys/fs/cgroup/cpuacct/cgroup.procs").write_text(str(os.getpid()))
            CGROUP.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
