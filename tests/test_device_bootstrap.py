"""`fleet device bootstrap` against a box in the field: a lab device with password login and
a host key nobody pinned (Lab.add_field_device, served by the asyncssh lab server).

Without the key's fingerprint nothing happens; with a wrong one neither; with the right one
the box ends pinned (its new key), keyed (the controller's key), registered and healthy, and
its password login is off.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from fixtures_provisioning import PASSPHRASE, make_factory
from labkit import CALM_HEALTH, run_cli

from fleet import provisioning as prov
from fleet.lab import Lab, host_key_path
from fleet.transport import known_hosts_name, pinned_lines

PASSWORD = "field-admin-pw"  # noqa: S105  (the lab box's first-contact password)
ENV = {"FLEET_BOOTSTRAP_PASSWORD": PASSWORD, "FLEET_CA_PASSPHRASE": PASSPHRASE.decode()}


@pytest.fixture
def field(tmp_path: Path) -> Iterator[Lab]:
    factory = make_factory(tmp_path / "project")
    (factory.project.root / "fleet.yaml").write_text(CALM_HEALTH)
    lab = Lab(factory.project)
    lab.add_field_device("field-01", PASSWORD)
    yield lab
    lab.down()


def _bootstrap(lab: Lab, *extra: str):
    port = str(lab.device("field-01").port)
    return run_cli(lab.project.root, "device", "bootstrap", "127.0.0.1", "--port", port,
                   "--name", "field-01", "--site", "field", "--password-prompt",
                   "--hardware", "jetson-xavier-nx", *extra, env=ENV)


def _fingerprint(lab: Lab) -> str:
    return prov.ssh_fingerprint(host_key_path(lab.layout("field-01")).with_suffix(".pub")
                                .read_text())


def _untouched(lab: Lab) -> None:
    name = known_hosts_name("127.0.0.1", lab.device("field-01").port)
    known = lab.project.known_hosts
    assert not known.exists() or pinned_lines(known, name) == []
    assert not lab.layout("field-01").device_json.exists()


def _password_login(lab: Lab) -> bool:
    sock = socket.create_connection(("127.0.0.1", lab.device("field-01").port), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        transport.auth_password("root", PASSWORD)
        return True
    except paramiko.AuthenticationException:
        return False
    finally:
        transport.close()


def test_refused_without_the_fingerprint(field: Lab) -> None:
    assert _password_login(field)  # the box as it comes: its admin's password works
    result = _bootstrap(field)
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip()
    assert line.startswith("error: the host key of 127.0.0.1:") and "not pinned" in line
    assert _fingerprint(field) in line and "--host-key-fingerprint" in line
    assert len(line.splitlines()) == 1
    _untouched(field)


def test_refused_with_another_fingerprint(field: Lab) -> None:
    other = "SHA256:" + "A" * 43
    result = _bootstrap(field, "--host-key-fingerprint", other)
    assert result.exit_code == 1, result.stderr
    assert f"offers host key {_fingerprint(field)}, not {other}" in result.stderr
    _untouched(field)


def test_with_the_fingerprint_the_box_ends_pinned_keyed_registered_healthy(field: Lab) -> None:
    old = _fingerprint(field)
    result = _bootstrap(field, "--host-key-fingerprint", old, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["step"] for s in report["steps"]] == [
        "login", "install", "trust anchor", "host key", "identity", "ssh", "back", "registry"]

    # Pinned: the box's new key (from its archive), not the one it had.
    new = _fingerprint(field)
    name = known_hosts_name("127.0.0.1", field.device("field-01").port)
    pinned = pinned_lines(field.project.known_hosts, name)
    assert new != old and len(pinned) == 1
    assert prov.ssh_fingerprint(" ".join(pinned[0][1:3])) == new
    # Keyed and registered, as a box provisioned by USB.
    lay = field.layout("field-01")
    assert json.loads(lay.device_json.read_text())["name"] == "field-01"
    assert (lay.ssh_dir / "authorized_keys").read_text().strip()
    shown = run_cli(field.project.root, "devices", "show", "field-01", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["device"]["provisioning"] == "PROVISIONED"
    health = run_cli(field.project.root, "health", "-i", "lab", "--limit", "field-01", "--json")
    verdict = json.loads(health.stdout)["devices"][0]
    assert verdict["verdict"] == "healthy", verdict
    # The first-contact credential is gone.
    assert not _password_login(field)
    # So a second bootstrap with the old credential cannot even log in.
    again = _bootstrap(field, "--host-key-fingerprint", new)
    assert again.exit_code == 1 and "refused the login of root" in again.stderr


@pytest.mark.parametrize(("args", "message"), [
    ((), "give the box's credential: --password-prompt or --key FILE"),
    (("--password-prompt", "--key", "{tmp}/id_ed25519"), "give the box's credential"),
    (("--key", "{tmp}/missing"), "no such key file"),
    (("--password-prompt", "--name", "../etc"), "../etc"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_contact(tmp_path: Path, args: tuple[str, ...],
                                                            message: str) -> None:
    """Refused before the box is contacted (nothing listens on port 9) or anything is written."""
    (tmp_path / "id_ed25519").write_text("not used\n")
    argv = [a.format(tmp=tmp_path) for a in args]
    result = run_cli(tmp_path, "device", "bootstrap", "127.0.0.1", "--port", "9", *argv, env=ENV)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert not (tmp_path / ".fleet").exists() or not any((tmp_path / ".fleet").rglob("known_hosts"))
