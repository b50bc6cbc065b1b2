"""What an independent look at `fleet serve` found (issue 18): a busy port, another loopback
address, damaged users files and journals, users removed or demoted while signed in, and
made-up names at the sign-in form. Each runs against a real `fleet serve` process or the
real CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from consolekit import Client, Console, add_user
from labkit import run_cli

from fleet.console.security import LoginLimiter
from fleet.console.users import users_path
from fleet.project import Project
from fleet.registry import open_registry
from fleet.rollout.journal import Journal, rollouts_dir

PW = "a-long-enough-passphrase"


def _project(root: Path) -> Project:
    project = Project.locate(root)
    registry = open_registry(project)
    registry.upsert_device("berlin-01", site="berlin", hardware="jetson-orin", arch="aarch64")
    registry.close()
    return project


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    project = _project(root)
    journal = Journal.create(project, header={"version": "1.1.0"}, devices=["berlin-01"])
    journal.release()
    tokens = {name: add_user(root, name, "operator", PW)
              for name in ("ana", "bob", "cy", "dee")}
    served = Console(root, "--health-every", "0")
    yield root, served, tokens, journal.id
    served.stop()


def _serve(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli.main", "--project", str(root),
                           "--no-color", "serve", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_second_console_on_a_busy_port_is_one_line_and_exit_1(console):
    root, served, _, _ = console
    res = _serve(root, "--port", str(served.port), "--health-every", "0")
    assert res.returncode == 1, res
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert f"cannot listen on 127.0.0.1:{served.port}" in res.stderr
    assert "fleet console on" not in res.stderr + res.stdout  # nothing claims to be serving


def _listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "fleet serve exited"
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # the server is starting: poll its port, bounded above
    raise AssertionError(f"not listening on {host}:{port}")


def test_a_console_on_another_loopback_address_answers_its_own_host_name(tmp_path):
    _project(tmp_path)
    add_user(tmp_path, "ana", "viewer", PW)
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "fleet.cli.main", "--project", str(tmp_path),
                             "serve", "--host", "127.0.0.2", "--port", str(port),
                             "--health-every", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _listening("127.0.0.2", port, proc, timeout=60)
        client = Client(f"http://127.0.0.2:{port}")
        assert client.get("/login").status == 200  # was 421 "unexpected Host header"
        assert client.login("ana", PW).status == 303
        assert client.get("/login", Host="evil.example").status == 421  # still guarded
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("content", ['{"users": {"ana": "x"', '{"users": {"ana": "x"}}', "[]"])
def test_a_damaged_users_file_is_one_line_not_a_traceback(tmp_path, content):
    project = _project(tmp_path)
    path = users_path(project)
    path.write_text(content)
    path.chmod(0o600)
    for args in (("serve", "user", "list"), ("serve", "--port", "1")):
        res = run_cli(tmp_path, *args)
        assert res.exit_code == 2, res
        assert res.stderr.strip() == (f"error: not a console users file ({path}); remove it "
                                      "and add the users again with `fleet serve user add`")


def test_a_users_file_others_can_read_is_refused(tmp_path):
    add_user(tmp_path, "ana", "operator", PW)
    path = users_path(Project.locate(tmp_path))
    path.chmod(0o644)
    res = run_cli(tmp_path, "serve", "user", "list")
    assert res.exit_code == 2
    assert "readable by others (mode 0644)" in res.stderr and f"chmod 600 {path}" in res.stderr


def test_a_removed_demoted_or_repassworded_user_is_signed_out_at_once(console):
    root, served, _, rollout_id = console
    bob, cy, dee = Client(served.base), Client(served.base), Client(served.base)
    for name, client in (("bob", bob), ("cy", cy), ("dee", dee)):
        assert client.login(name, PW).status == 303
    csrf = bob.csrf()
    add_user(root, "bob", "viewer", PW)  # bob is a viewer from now on
    assert run_cli(root, "serve", "user", "remove", "cy").exit_code == 0
    add_user(root, "dee", "operator", PW + "-changed")  # dee's password changed
    for client in (bob, cy, dee):
        answer = client.get("/")
        assert answer.status == 303 and answer.headers["location"].startswith("/login")
    # the old operator session cannot act either, even with its CSRF token
    assert bob.post(f"/rollouts/{rollout_id}/abort", {"csrf": csrf}).status == 303
    assert not Journal.open(Project.locate(root), rollout_id).report().abort_requested


def test_a_damaged_journal_is_listed_as_unreadable_and_breaks_nothing(console):
    root, served, tokens, rollout_id = console
    folder = rollouts_dir(Project.locate(root))
    (folder / "r-garbage.jsonl").write_bytes(b"garbage\n\x00\xff\n")
    (folder / "r-notevent.jsonl").write_text("[1, 2]\n")
    client = Client(served.base)
    assert client.login("ana", PW).status == 303
    for path in ("/", "/rollouts"):
        assert client.get(path).status == 200, path
    assert "r-garbage" in client.get("/rollouts").text
    answer = client.get("/api/rollouts", Authorization=f"Bearer {tokens['ana']}")
    assert answer.status == 200
    status = {r["id"]: r["status"] for r in json.loads(answer.body)["rollouts"]}
    assert status["r-garbage"] == status["r-notevent"] == "unreadable"
    assert status[rollout_id] != "unreadable"
    assert client.get("/rollouts/r-notevent").status == 404  # a clear page, not a 500
    bad = client.get("/api/rollouts/r-notevent", Authorization=f"Bearer {tokens['ana']}")
    assert bad.status == 404 and "cannot be replayed" in json.loads(bad.body)["error"]


def test_made_up_user_names_are_not_remembered_by_the_login_limiter():
    limiter = LoginLimiter(failures=2, window=300.0)
    limiter.failed("ip:10.0.0.1")
    limiter.failed("ip:10.0.0.1")
    for i in range(1000):  # a blocked client keeps trying new names: none is stored
        assert limiter.blocked("ip:10.0.0.1", f"user:{i}") > 0
    assert len(limiter) == 1
    gone = LoginLimiter(failures=2, window=0.0)
    gone.failed("ip:10.0.0.2", "user:x")
    assert gone.blocked("ip:10.0.0.2", "user:x") == 0 and len(gone) == 0


def test_tls_files_that_do_not_load_are_one_line_and_exit_2(tmp_path):
    from test_console_security import _self_signed

    add_user(tmp_path, "ana", "operator", PW)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, _ = _self_signed(tmp_path / "a")
    _, other_key = _self_signed(tmp_path / "b")  # a key, but not the certificate's
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    for pair in ((not_pem, not_pem), (cert, other_key)):
        res = run_cli(tmp_path, "serve", "--port", "1", "--tls-cert", str(pair[0]),
                      "--tls-key", str(pair[1]))
        assert res.exit_code == 2, res
        assert res.stderr.count("\n") == 1 and "not a usable certificate and key" in res.stderr


def test_an_error_shown_in_the_console_carries_no_url_credentials():
    from fleet.console.remote import describe_error
    from fleet.errors import DeviceError

    said = ("berlin-01: no snapshot of lobby: cannot open rtsp://admin:Cam3ra-Pa55@10.0.0.9/live"
            " (and RTSP://u:p%40ss@cam2/x)")
    shown = describe_error(DeviceError(said))
    assert "Cam3ra-Pa55" not in shown and "p%40ss" not in shown and "admin" not in shown
    assert "rtsp://10.0.0.9/live" in shown and "RTSP://cam2/x" in shown
    assert describe_error(ValueError("plain words")) == "ValueError: plain words"


def test_a_failed_health_sweep_is_shown_without_url_credentials():
    from fleet.console.health_board import HealthBoard, Poller
    from fleet.errors import ConfigError

    board = HealthBoard()

    def sweep():
        poller.stopping.set()  # one round only
        raise ConfigError("broker refused mqtts://fleet:Br0ker-PW@broker.example:8883")

    poller = Poller(board, sweep, every=0)
    poller.run()  # in this thread: the round is over when it returns
    assert board.last_error and "Br0ker-PW" not in board.last_error
    assert "mqtts://broker.example:8883" in board.last_error


def test_a_camera_password_is_served_nowhere_in_its_record():
    from urllib.parse import quote

    from fleet.console.state import public_camera

    secret = "Q-Secret/77&x"
    shown = public_camera({
        "name": "gate", "password": secret, "username": "admin",
        "rtsp_url": f"rtsp://10.0.0.9/live?user=admin&password={quote(secret, safe='')}",
        "status_detail": f"probe failed: rtsp://admin:{quote(secret, safe='')}@10.0.0.9/live",
        "description": f"gate camera (password {secret})", "tags": {}})
    text = json.dumps(shown)
    assert "password" not in shown
    assert secret not in text and quote(secret, safe="") not in text and "Q-Secret" not in text
    assert shown["rtsp_url"].startswith("rtsp://10.0.0.9/live?user=admin&password=")
    assert "rtsp://10.0.0.9/live" in shown["status_detail"]


def test_a_users_file_damaged_while_serving_is_its_one_line(tmp_path):
    token = add_user(tmp_path, "ana", "operator", PW)
    served = Console(tmp_path, "--health-every", "0")
    try:
        client = Client(served.base)
        assert client.login("ana", PW).status == 303
        path = users_path(Project.locate(tmp_path))
        path.write_text('{"users": {"ana": "x"}}')  # written by hand, wrongly
        answer = client.get("/api/devices", Authorization=f"Bearer {token}")
        assert answer.status == 500
        assert json.loads(answer.body)["error"].startswith("not a console users file")
        page = client.get("/")
        assert page.status == 500 and "not a console users file" in page.text
        assert "Traceback" not in served.log.read_text()
    finally:
        served.stop()


def test_a_link_cannot_make_the_rollout_page_say_its_own_words(console):
    _, served, _, rollout_id = console
    client = Client(served.base)
    assert client.login("ana", PW).status == 303
    words = "Rollout failed: sign in again at evil.example"
    page = client.get(f"/rollouts/{rollout_id}?done={urllib.parse.quote(words)}")
    assert page.status == 200 and "evil.example" not in page.text
    paused = client.get(f"/rollouts/{rollout_id}?done=pause").text
    assert "pause requested: the rollout stops after the current batch" in paused
