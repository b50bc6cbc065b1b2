"""Uploads streamed into `fleet-agent receive` and hashed on arrival (#19), on both SSH servers.

The bulk bytes go through the system's OpenSSH client when it is installed (paramiko
otherwise); either way only the project's pinned known_hosts are trusted.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.agent import Agent
from fleet.errors import AgentCallError, DeviceError
from fleet.lab import HOST, Lab
from fleet.transport import SSHSession, controller_key, openssh_command

AGENT = str(Path(sys.executable).parent / "fleet-agent")


def agent(lab: Lab, name: str = "berlin-01") -> Agent:
    dev = lab.device(name)
    session = SSHSession.connect(name, HOST, dev.port, "root", controller_key(lab.project),
                                 lab.project.known_hosts, connect_timeout=5, command_timeout=30)
    session.openssh_min_bytes = 0  # these files are small: send them as a bundle would go
    return Agent(session, name, AGENT)


def never(_part: str) -> str:
    raise AssertionError("a streamed upload is verified by the device's own hash")


def test_streamed_upload_lands_whole_and_verified(any_lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    a = agent(any_lab)
    remote = str(any_lab.layout("berlin-01").staging / "stream.bin")
    try:
        digest = a.session.put(src, remote, verify=never, receive=a.receive)
    finally:
        a.session.close()
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert Path(remote).read_bytes() == src.read_bytes()
    assert not Path(remote + ".part").exists()


def test_streamed_upload_resumes_from_the_partial_file(any_lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    src = tmp_path / "resume.bin"
    src.write_bytes(data)
    remote = str(any_lab.layout("berlin-01").staging / "resume.bin")
    Path(remote + ".part").write_bytes(data[:1234567])  # an upload cut short
    a = agent(any_lab)
    try:
        a.session.put(src, remote, verify=never, receive=a.receive)
    finally:
        a.session.close()
    assert Path(remote).read_bytes() == data


def test_a_wrong_prefix_fails_verification_and_is_removed(any_lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "bad.bin"
    src.write_bytes(os.urandom(1024 * 1024))
    remote = str(any_lab.layout("berlin-01").staging / "bad.bin")
    Path(remote + ".part").write_bytes(b"\0" * 4096)  # not our prefix
    a = agent(any_lab)
    try:
        with pytest.raises(DeviceError, match="failed verification"):
            a.session.put(src, remote, verify=never, receive=a.receive)
        assert not Path(remote + ".part").exists()
        a.session.put(src, remote, verify=never, receive=a.receive)
    finally:
        a.session.close()
    assert Path(remote).read_bytes() == src.read_bytes()


def test_receive_refuses_paths_outside_the_upload_dir(any_lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 100)
    outside = tmp_path / "elsewhere.bin"
    a = agent(any_lab)
    try:
        with pytest.raises(AgentCallError, match="not in the upload dir"):
            a.session.put(src, str(outside), verify=never, receive=a.receive)
    finally:
        a.session.close()
    assert not Path(str(outside) + ".part").exists()
    from fleet_runtime import slots  # receive checks against layout.staging, not importing slots

    assert slots.incoming_dir(any_lab.layout("berlin-01")) == any_lab.layout("berlin-01").staging


def test_openssh_path_trusts_only_the_pinned_known_hosts(any_lab: Lab, tmp_path: Path) -> None:
    a = agent(any_lab)
    assert a.session.endpoint is not None
    if openssh_command(a.session.endpoint) is None:
        a.session.close()
        pytest.skip("no OpenSSH client here: uploads use paramiko, tested above")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    a.session.endpoint = replace(a.session.endpoint, known_hosts=empty)
    src = tmp_path / "y.bin"
    src.write_bytes(b"y" * 100)
    try:
        with src.open("rb") as fh, pytest.raises(DeviceError, match="ssh failed"):
            a.session.exec_file([AGENT, "info"], fh)
    finally:
        a.session.close()


@pytest.mark.parametrize("hostname", ["-oProxyCommand=touch /tmp/pwned", "-p1"])
def test_a_hostname_that_looks_like_an_option_never_reaches_ssh(hostname: str) -> None:
    from fleet.transport import Endpoint

    end = Endpoint(hostname, 22, "root", Path("/k"), Path("/kh"))
    assert openssh_command(end) is None


def test_the_install_stream_refuses_a_changed_host_key(any_lab: Lab, tmp_path: Path) -> None:
    """`fleet ota`'s default transfer (the bundle streamed into `fleet-agent install -`
    through `Agent.call_file`) trusts only the pinned key: another key pinned for the
    device's address is refused before a byte reaches the agent."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from fleet_runtime import slots

    from fleet.transport import known_hosts_name

    a = agent(any_lab, "berlin-02")
    assert a.session.endpoint is not None
    if openssh_command(a.session.endpoint) is None:
        a.session.close()
        pytest.skip("no OpenSSH client here: the stream uses paramiko (tests/test_transport*)")
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{known_hosts_name(HOST, a.session.endpoint.port)} {other}\n")
    a.session.endpoint = replace(a.session.endpoint, known_hosts=wrong)
    layout = any_lab.layout("berlin-02")
    before = slots.read_state(layout)
    src = tmp_path / "any.bundle"
    src.write_bytes(os.urandom(1 << 20))
    remote = str(layout.staging / "any.bundle")
    try:
        with src.open("rb") as fh, pytest.raises(DeviceError, match="ssh failed"):
            a.call_file("install", "-", "--save", remote, src=fh, timeout=60)
    finally:
        a.session.close()
    assert slots.read_state(layout) == before
    assert not list(layout.staging.glob("*.part"))


def test_our_hash_is_remembered_per_file_version_and_a_wrong_one_fails_closed(
        any_lab: Lab, tmp_path: Path) -> None:
    """#19: a rollout sends one bundle to many devices; the controller hashes it once per
    version of the file. A remembered hash that does not match what the device received
    (here: planted) refuses the upload and removes the partial file, as any mismatch does,
    and is forgotten, so the next try hashes the file afresh."""
    from fleet import digests

    src = tmp_path / "same.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    remote = str(any_lab.layout("berlin-01").staging / "same.bin")
    a = agent(any_lab)
    try:
        assert a.session.put(src, remote, verify=never, receive=a.receive) == want
        assert digests.remembered(src) == want
        src.write_bytes(os.urandom(2 * 1024 * 1024))  # same size: a new version all the same
        assert digests.remembered(src) is None
        with digests._lock:  # noqa: SLF001 - plant a wrong hash for the file as it is now
            digests._known[digests.key_of(src.stat())] = want  # noqa: SLF001
        with pytest.raises(DeviceError, match="failed verification"):
            a.session.put(src, remote, verify=never, receive=a.receive)
        assert not Path(remote + ".part").exists()
        assert digests.remembered(src) is None  # the wrong hash is dropped: a retry succeeds
        assert a.session.put(src, remote, verify=never, receive=a.receive) == \
            hashlib.sha256(src.read_bytes()).hexdigest()
    finally:
        digests.forget_all()
        a.session.close()


def test_a_small_file_goes_over_the_open_connection(any_lab: Lab, tmp_path: Path) -> None:
    """Under `openssh_min_bytes` a second connection costs more than OpenSSH's cipher
    saves: the file goes over the paramiko connection already open (already pinned), so
    a known_hosts that OpenSSH would refuse plays no part."""
    a = agent(any_lab)
    assert a.session.endpoint is not None
    a.session.openssh_min_bytes = 1 << 20
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    a.session.endpoint = replace(a.session.endpoint, known_hosts=empty)
    src = tmp_path / "small.bin"
    src.write_bytes(b"s" * 1000)
    try:
        with src.open("rb") as fh:
            assert a.session.exec_file(["cat"], fh).stdout == src.read_bytes()
    finally:
        a.session.close()


_OLD_RECEIVER = """#!{python}
import json, sys
if sys.argv[1:2] == ["receive"] and "--expect" in sys.argv:
    print(json.dumps({{"ok": False, "protocol": 1, "error": {{"code": "usage",
          "message": "fleet-agent: unrecognized arguments: --expect"}}}}))
    sys.exit(2)
from fleet_runtime.agent.cli import main
sys.exit(main())
"""


def test_an_agent_without_expect_still_receives(any_lab: Lab, tmp_path: Path) -> None:
    """Our hash goes along (`receive --expect`: the device renames the file); an older
    agent refuses the flag before reading a byte, and gets the stream again without it."""
    from fleet import digests

    wrapper = tmp_path / "agent"
    wrapper.write_text(_OLD_RECEIVER.format(python=sys.executable))
    wrapper.chmod(0o755)
    src = tmp_path / "old.bin"
    src.write_bytes(os.urandom(1024 * 1024))
    digests.remember(src, hashlib.sha256(src.read_bytes()).hexdigest())
    remote = str(any_lab.layout("berlin-01").staging / "old.bin")
    a = agent(any_lab)
    old = Agent(a.session, "berlin-01", str(wrapper))
    try:
        assert old.session.put(src, remote, verify=never, receive=old.receive) == \
            hashlib.sha256(src.read_bytes()).hexdigest()
    finally:
        digests.forget_all()
        a.session.close()
    assert Path(remote).read_bytes() == src.read_bytes()


def test_a_lab_command_runs_no_login_dotfiles(any_lab: Lab) -> None:
    """A lab device logs in as this host's root: its commands must not pay for the host's
    ~/.bashrc (a developer's pyenv set-up here, 0.1-0.3 s of CPU each) when a device's
    stock one returns at once for a non-interactive shell. bash reads it for an SSH
    command only as a top-level shell, so the lab's sshd starts sessions one level down;
    the asyncssh lab runs commands with /bin/sh, which reads none."""
    a = agent(any_lab)
    chan = a.session.transport.open_session(timeout=10)
    try:
        chan.exec_command('printenv SHLVL; echo "${BASH_VERSION:+bash}"')
        out = chan.makefile("rb").read().decode().split()
    finally:
        chan.close()
        a.session.close()
    if "bash" in out:
        assert int(out[0]) >= 2, out
