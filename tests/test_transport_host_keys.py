"""Host-key pinning without a lab: the pure functions behind "never trusted on first use".

Mutation testing (make mutate transport-host-keys) showed the lab tests could not tell a
changed key from an accepted one when the new key happened to sort after the pinned one.
"""

from __future__ import annotations

import re
from pathlib import Path

import paramiko
import pytest

from fleet.errors import HostKeyError
from fleet.transport import (
    _verify_host_key,
    fingerprint,
    known_hosts_name,
    pin_host_key,
    unpin_host_key,
)


def ed25519() -> paramiko.PKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.OpenSSH,
                                                     NoEncryption())
    import io

    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))


def openssh(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


@pytest.mark.parametrize("port, name", [(22, "h"), (23, "[h]:23"), (21, "[h]:21"),
                                        (2222, "[h]:2222")])
def test_known_hosts_names_follow_openssh(port: int, name: str) -> None:
    assert known_hosts_name("h", port) == name


def test_the_pinned_key_is_accepted(tmp_path: Path) -> None:
    key = ed25519()
    pin_host_key(tmp_path / "known_hosts", "127.0.0.1", 2222, openssh(key))
    _verify_host_key("cam", "127.0.0.1", 2222, key, tmp_path / "known_hosts")


def test_a_changed_key_is_refused_whichever_way_it_sorts(tmp_path: Path) -> None:
    lower, pinned, higher = sorted((ed25519() for _ in range(3)), key=lambda k: k.asbytes())
    pin_host_key(tmp_path / "known_hosts", "127.0.0.1", 2222, openssh(pinned))
    for offered in (lower, higher):
        with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as info:
            _verify_host_key("cam", "127.0.0.1", 2222, offered, tmp_path / "known_hosts")
        assert fingerprint(pinned) in str(info.value) and fingerprint(offered) in str(info.value)


def test_a_key_of_another_type_names_the_pinned_key(tmp_path: Path) -> None:
    pinned = ed25519()
    pin_host_key(tmp_path / "known_hosts", "127.0.0.1", 2222, openssh(pinned))
    offered = paramiko.ECDSAKey.generate()
    with pytest.raises(HostKeyError, match=re.escape(f"pinned {fingerprint(pinned)}")):
        _verify_host_key("cam", "127.0.0.1", 2222, offered, tmp_path / "known_hosts")


def test_a_key_pinned_for_another_port_is_unknown_here(tmp_path: Path) -> None:
    key = ed25519()
    pin_host_key(tmp_path / "known_hosts", "127.0.0.1", 2222, openssh(key))
    with pytest.raises(HostKeyError, match="not pinned"):
        _verify_host_key("cam", "127.0.0.1", 2223, key, tmp_path / "known_hosts")


def test_unpin_says_whether_it_removed_a_pin(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    assert unpin_host_key(known_hosts, "127.0.0.1", 2222) is False
    pin_host_key(known_hosts, "127.0.0.1", 2222, openssh(ed25519()))
    pin_host_key(known_hosts, "127.0.0.1", 2223, openssh(ed25519()))
    assert unpin_host_key(known_hosts, "127.0.0.1", 2224) is False
    assert unpin_host_key(known_hosts, "127.0.0.1", 2222) is True
    assert unpin_host_key(known_hosts, "127.0.0.1", 2222) is False
    assert known_hosts.read_text().startswith("[127.0.0.1]:2223 ")


def test_a_pin_keeps_the_key_and_drops_its_comment(tmp_path: Path) -> None:
    key = ed25519()
    pin_host_key(tmp_path / "known_hosts", "127.0.0.1", 2222, openssh(key) + " root@factory")
    assert (tmp_path / "known_hosts").read_text() == f"[127.0.0.1]:2222 {openssh(key)}\n"


def test_unpin_on_a_big_fleet_still_says_whether_it_removed_a_pin(tmp_path: Path) -> None:
    from fleet.transport import pin_host_keys

    known_hosts = tmp_path / "known_hosts"
    key = openssh(ed25519())
    pin_host_keys(known_hosts, {known_hosts_name("127.0.0.1", 3000 + i): key for i in range(300)})
    assert unpin_host_key(known_hosts, "127.0.0.1", 2999) is False
    assert unpin_host_key(known_hosts, "127.0.0.1", 3299) is True
    assert len(known_hosts.read_text().splitlines()) == 299
