"""The SSH transport against real servers: OpenSSH sshd and asyncssh (each test runs on both)."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_runtime.layout import Layout

from fleet.agent import Agent
from fleet.errors import AgentCallError, DeviceError, HostKeyError
from fleet.lab import HOST, Lab, host_key_path, write_host_key
from fleet.transport import (
    PENDING,
    SSHSession,
    controller_key,
    pin_host_key,
    pin_host_keys,
    pinned_lines,
    unpin_host_key,
)

AGENT = str(Path(sys.executable).parent / "fleet-agent")


def connect(lab: Lab, name: str) -> SSHSession:
    dev = lab.device(name)
    return SSHSession.connect(name, HOST, dev.port, "root", controller_key(lab.project),
                              lab.project.known_hosts, connect_timeout=5, command_timeout=30)


def agent(lab: Lab, name: str) -> Agent:
    return Agent(connect(lab, name), name, AGENT)


def ssh_fingerprint(pub_line: str) -> str:
    blob = base64.b64decode(pub_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_exec_runs_agent_and_parses_protocol(any_lab: Lab) -> None:
    info = agent(any_lab, "berlin-01").info()
    assert info.name == "berlin-01" and info.software == "1.0.0" and info.slot == "a"


def test_arguments_are_quoted_never_interpreted(any_lab: Lab, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker}; $(touch {marker}) `touch {marker}` 'q\""
    with pytest.raises(AgentCallError) as err:
        agent(any_lab, "berlin-01").call("checksum", hostile)
    assert err.value.code == "not-found"
    assert hostile in err.value.message  # arrived as one literal argument
    assert not marker.exists()


def test_unknown_host_key_is_refused(any_lab: Lab) -> None:
    dev = any_lab.device("berlin-02")
    pub = host_key_path(any_lab.layout("berlin-02")).with_suffix(".pub").read_text()
    unpin_host_key(any_lab.project.known_hosts, HOST, dev.port)
    try:
        with pytest.raises(HostKeyError) as err:
            connect(any_lab, "berlin-02")
        text = str(err.value)
        assert "berlin-02" in text and "not pinned" in text and ssh_fingerprint(pub) in text
    finally:
        pin_host_key(any_lab.project.known_hosts, HOST, dev.port, pub)
    connect(any_lab, "berlin-02").close()


def test_changed_host_key_is_refused_naming_both_fingerprints(any_lab: Lab, tmp_path: Path) -> None:
    dev = any_lab.device("berlin-02")
    real = host_key_path(any_lab.layout("berlin-02")).with_suffix(".pub").read_text()
    impostor = write_host_key(Layout(tmp_path))  # the key an attacker's box would present
    pin_host_key(any_lab.project.known_hosts, HOST, dev.port, impostor)
    try:
        with pytest.raises(HostKeyError) as err:
            connect(any_lab, "berlin-02")
        text = str(err.value)
        assert "HOST KEY CHANGED" in text and "berlin-02" in text
        assert ssh_fingerprint(impostor) in text and ssh_fingerprint(real) in text
        assert "\n" not in text
    finally:
        pin_host_key(any_lab.project.known_hosts, HOST, dev.port, real)


def test_a_pending_key_is_accepted_beside_the_old_and_then_replaces_it(
    any_lab: Lab, tmp_path: Path
) -> None:
    """`--replace-identity` (issue 12.5): the running box keeps answering with its old
    key; the first answer with the new one leaves only the new one pinned."""
    dev = any_lab.device("berlin-02")
    known = any_lab.project.known_hosts
    real = host_key_path(any_lab.layout("berlin-02")).with_suffix(".pub").read_text()
    spare = write_host_key(Layout(tmp_path))
    name = f"[{HOST}]:{dev.port}"
    try:
        pin_host_key(known, HOST, dev.port, spare)  # the old identity...
        pin_host_keys(known, {name: real}, beside=True)  # ...and the new one, pending
        connect(any_lab, "berlin-02").close()
        assert [f[1:3] for f in pinned_lines(known, name)] == [real.split()[:2]]
        assert PENDING not in known.read_text()
        pin_host_keys(known, {name: spare}, beside=True)  # the device still on its old key
        connect(any_lab, "berlin-02").close()
        assert len(pinned_lines(known, name)) == 2  # nothing settled yet
    finally:
        pin_host_key(known, HOST, dev.port, real)


def test_hashed_known_hosts_still_pin(any_lab: Lab) -> None:
    known = any_lab.project.known_hosts
    saved = known.read_bytes()
    try:
        subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
        assert "[127.0.0.1]" not in known.read_text()
        connect(any_lab, "berlin-01").close()
    finally:
        known.write_bytes(saved)
        Path(f"{known}.old").unlink(missing_ok=True)


def test_connection_refused_is_a_device_error(any_lab: Lab) -> None:
    with pytest.raises(DeviceError, match="cannot connect"):
        SSHSession.connect("ghost", HOST, 1, "root", controller_key(any_lab.project),
                           any_lab.project.known_hosts, connect_timeout=2)


def _staging(lab: Lab, name: str) -> str:
    return str(lab.layout(name).staging)


def test_put_verifies_sha256(any_lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    a = agent(any_lab, "berlin-01")
    remote = _staging(any_lab, "berlin-01") + "/blob.bin"
    digest = a.session.put(src, remote, verify=a.checksum)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert Path(remote).read_bytes() == src.read_bytes()
    assert not Path(remote + ".part").exists()


def test_corrupt_partial_upload_fails_verification_then_recovers(any_lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "blob2.bin"
    src.write_bytes(os.urandom(1024 * 1024))
    remote = _staging(any_lab, "berlin-01") + "/blob2.bin"
    Path(remote + ".part").write_bytes(b"\0" * 4096)  # a partial file that is not our prefix
    a = agent(any_lab, "berlin-01")
    with pytest.raises(DeviceError, match="failed verification"):
        a.session.put(src, remote, verify=a.checksum)
    assert not Path(remote + ".part").exists()
    a.session.put(src, remote, verify=a.checksum)
    assert Path(remote).read_bytes() == src.read_bytes()


UPLOADER = r"""
import sys
from pathlib import Path
from fleet.agent import Agent
from fleet.lab import HOST, Lab
from fleet.project import Project
from fleet.transport import SSHSession, controller_key
root, name, src, remote, agent_path = sys.argv[1:6]
lab = Lab(Project.locate(root))
dev = lab.device(name)
s = SSHSession.connect(name, HOST, dev.port, "root", controller_key(lab.project), lab.project.known_hosts)
a = Agent(s, name, agent_path)
def progress(done, total):
    print(done, total, flush=True)
s.put(Path(src), remote, verify=a.checksum, progress=progress)
print("finished", flush=True)
"""


def test_upload_killed_half_way_resumes_and_verifies(any_lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    size = 48 * 1024 * 1024
    src.write_bytes(os.urandom(size))
    remote = _staging(any_lab, "berlin-02") + "/big.bin"
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, str(any_lab.project.root), "berlin-02",
                             str(src), remote, AGENT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # the uploader reports its progress; kill it past half-way
        if line.startswith("finished"):
            pytest.fail("upload finished before it could be interrupted")
        if int(line.split()[0]) >= size // 2:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    partial = Path(remote + ".part")
    assert partial.exists() and 0 < partial.stat().st_size < size
    a = agent(any_lab, "berlin-02")
    seen: list[int] = []
    a.session.put(src, remote, verify=a.checksum, progress=lambda done, total: seen.append(done))
    assert seen[0] > size // 4  # resumed from the partial file, not from zero
    assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()
