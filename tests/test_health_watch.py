"""`fleet health --watch` keeps one SSH connection per device across rounds (#19)."""

from __future__ import annotations

from pathlib import Path

from labkit import CALM_HEALTH, default_ssh_kind, start_lab

from fleet import health
from fleet import inventory as inv
from fleet.transport import CONNECTION_NAME


def _sessions(nr: inv.Nornir) -> dict[str, object]:
    return {name: host.connections[CONNECTION_NAME].connection
            for name, host in nr.inventory.hosts.items() if CONNECTION_NAME in host.connections}


def test_rounds_reuse_connections_and_reconnect_a_restarted_device(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(CALM_HEALTH)
    lab = start_lab(tmp_path, 1, 2, default_ssh_kind())
    nr = inv.select(lab.project, inv.Selection.of("lab"))
    try:
        first = health.sweep(lab.project, nr, keep_connections=True)
        assert [r.verdict for r in first] != ["unreachable"] * 2
        kept = _sessions(nr)
        assert len(kept) == 2
        second = health.sweep(lab.project, nr, keep_connections=True)
        assert all(r.verdict != "unreachable" for r in second)
        assert all(_sessions(nr)[n] is s for n, s in kept.items())  # no new key exchange
        device = sorted(kept)[1]
        lab.fault(device, "offline")
        lab.fault(device, "online")  # a restarted SSH server: the old connection may be gone
        health.sweep(lab.project, nr, keep_connections=True)
        again = {r.name: r.verdict for r in health.sweep(lab.project, nr, keep_connections=True)}
        assert again[device] != "unreachable", again
    finally:
        nr.close_connections(on_failed=True)
        lab.down()
    assert _sessions(nr) == {}
