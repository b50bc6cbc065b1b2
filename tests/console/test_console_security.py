"""The console's guards against a real `fleet serve` process (no browser, no lab):
sign-in redirects and 401s, CSRF, viewer 403s, rate-limited logins, cookie flags, CSP,
hostile text escaped, listening rules, users, and no camera secret in any byte served."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from consolekit import Client, Console, add_user, assert_no_secrets, hidden
from labkit import run_cli

from fleet.project import Project
from fleet.registry import Camera, open_registry
from fleet.rollout.journal import Journal

OPERATOR_PW, VIEWER_PW = "operator-passphrase-1", "viewer-passphrase-22"
CAMERA_PW = "Cam3ra-Pa55-wOrd"
HOSTILE = "<script>alert(1)</script>"
HOSTILE_HTML = '<img src=x onerror="alert(2)"><b>lobby</b>'


def _journal(project: Project, devices: list[str]) -> str:
    """An interrupted rollout (its controller gone): resume and abort are allowed on it."""
    journal = Journal.create(project, header={"version": "1.1.0"}, devices=devices)
    journal.append({"event": "planned", "batches": [devices[:1], devices[1:]],
                    "sites": {d: "berlin" for d in devices}})
    journal.append({"event": "batch_started", "batch": 1, "size": 1, "devices": devices[:1]})
    journal.append({"event": "device_finished", "device": devices[0], "outcome": "succeeded"})
    journal.release()
    return journal.id


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    project = Project.locate(root)
    registry = open_registry(project)
    for name in ("berlin-01", "berlin-02", "berlin-03", "berlin-04"):
        registry.upsert_device(name, site="berlin", hardware="jetson-orin", arch="aarch64")
    registry.tag_device("berlin-01", {"label": HOSTILE})
    registry.write_cameras([Camera("lobby", "berlin-01", "rtsp://10.0.0.9/live", "admin",
                                   CAMERA_PW, HOSTILE_HTML)], [])
    registry.close()
    tokens = {"ana": add_user(root, "ana", "operator", OPERATOR_PW),
              "vic": add_user(root, "vic", "viewer", VIEWER_PW)}
    rollouts = {k: _journal(project, [f"berlin-0{i}" for i in d])
                for k, d in (("a", (1, 2)), ("b", (3, 4)))}
    console = Console(root, "--health-every", "0")
    yield root, console, tokens, rollouts
    console.stop()
    assert_no_secrets([CAMERA_PW] + list(tokens.values()) + [OPERATOR_PW, VIEWER_PW])


def _routes() -> tuple[list[str], list[str]]:
    """Every GET route of the console's pages and API, with sample path values."""
    from fleet.console import api, pages

    found = {"pages": [], "api": []}
    for kind, router in (("pages", pages.router), ("api", api.router)):
        for route in router.routes:
            if "GET" in route.methods:
                found[kind].append(route.path.replace("{name}", "berlin-01")
                                   .replace("{camera}", "lobby").replace("{rollout_id}", "r-x"))
    return found["pages"], found["api"]


def test_unauthenticated_pages_redirect_to_login_and_the_api_says_401(site):
    root, console, _, _ = site
    pages, api = _routes()
    assert "/" in pages and "/rollouts/r-x/events" in pages and "/api/devices" in api
    anon = Client(console.base)
    for path in pages:
        answer = anon.get(path)
        assert answer.status == 303, path
        assert answer.headers["location"].startswith("/login?next="), path
    for path in api:
        answer = anon.get(path)
        assert answer.status == 401 and answer.headers["www-authenticate"] == "Bearer", path
    assert anon.post("/rollouts/r-x/abort", {}).status == 303
    assert anon.request("POST", "/api/rollouts/r-x/abort").status == 401
    bad = anon.get("/api/devices", Authorization="Bearer fct_not-a-token")
    assert bad.status == 401


def test_session_cookie_flags_and_security_headers(site):
    _, console, _, _ = site
    client = Client(console.base)
    answer = client.login("ana", OPERATOR_PW)
    assert answer.status == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; --tls-cert adds it
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text.replace('<script src="/static/', "")  # no inline script


def test_a_foreign_host_header_is_refused(site):
    _, console, _, _ = site
    answer = Client(console.base).get("/login", Host="evil.example")
    assert answer.status == 421


def test_hostile_device_text_is_escaped(site):
    _, console, _, _ = site
    client = Client(console.base)
    client.login("vic", VIEWER_PW)
    for path in ("/devices/berlin-01", "/devices", "/cameras"):
        html = client.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
    device = client.get("/devices/berlin-01").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in device
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;&lt;b&gt;lobby&lt;/b&gt;" in device


def test_viewer_gets_403_on_every_action_and_nothing_changes(site):
    root, console, tokens, rollouts = site
    project = Project.locate(root)
    before = Journal.open(project, rollouts["a"]).events()
    viewer = Client(console.base)
    viewer.login("vic", VIEWER_PW)
    csrf = viewer.csrf()
    for action in ("pause", "resume", "abort", "retry"):
        answer = viewer.post(f"/rollouts/{rollouts['a']}/{action}", {"csrf": csrf})
        assert answer.status == 403 and "only operators" in answer.text, action
        api = Client(console.base).request("POST", f"/api/rollouts/{rollouts['a']}/{action}",
                                           headers={"Authorization": f"Bearer {tokens['vic']}"})
        assert api.status == 403, action
    assert viewer.get(f"/rollouts/{rollouts['a']}").text.count('id="action-') == 0
    assert Journal.open(project, rollouts["a"]).events() == before


def test_an_action_without_the_csrf_token_is_refused(site):
    root, console, _, rollouts = site
    project = Project.locate(root)
    before = Journal.open(project, rollouts["a"]).events()
    operator = Client(console.base)
    operator.login("ana", OPERATOR_PW)
    assert operator.post(f"/rollouts/{rollouts['a']}/abort", {}).status == 403
    assert operator.post(f"/rollouts/{rollouts['a']}/abort", {"csrf": "guess"}).status == 403
    # the browser's session on the API needs the token too (as a header)
    assert operator.request("POST", f"/api/rollouts/{rollouts['a']}/abort").status == 403
    assert Journal.open(project, rollouts["a"]).events() == before


def _shape(events: list[dict]) -> list[tuple]:
    return [(e["event"], e.get("device"), e.get("outcome"), e.get("status")) for e in events]


def test_console_abort_writes_the_events_the_cli_writes(site):
    root, console, _, rollouts = site
    project = Project.locate(root)
    operator = Client(console.base)
    operator.login("ana", OPERATOR_PW)
    answer = operator.post(f"/rollouts/{rollouts['a']}/abort", {"csrf": operator.csrf()})
    assert answer.status == 303
    assert run_cli(root, "ota", "abort", rollouts["b"]).exit_code == 0
    console_events = Journal.open(project, rollouts["a"]).events()
    cli_events = Journal.open(project, rollouts["b"]).events()
    assert _shape(console_events) == [(e, d if d != "berlin-03" and d != "berlin-04" else
                                       {"berlin-03": "berlin-01", "berlin-04": "berlin-02"}[d],
                                       o, s) for e, d, o, s in _shape(cli_events)]
    assert console_events[-1]["reason"] == "aborted by ana from the console"
    status = json.loads(run_cli(root, "ota", "status", rollouts["a"], "--json").stdout)
    assert status["status"] == "aborted"
    # the API gives the CLI's --json shape
    api = operator.get(f"/api/rollouts/{rollouts['a']}").text
    assert json.loads(api) == status


def test_api_token_reads_the_cli_shapes_without_passwords(site):
    root, console, tokens, _ = site
    bearer = {"Authorization": f"Bearer {tokens['vic']}"}
    client = Client(console.base)
    devices = json.loads(client.get("/api/devices", **bearer).text)["devices"]
    cli = json.loads(run_cli(root, "devices", "list", "--json").stdout)["devices"]
    assert devices == cli
    cameras = json.loads(client.get("/api/cameras", **bearer).text)["cameras"]
    assert cameras[0]["name"] == "lobby" and "password" not in cameras[0]
    spec = json.loads(client.get("/api/openapi.json", **bearer).text)
    assert "/api/rollouts/{rollout_id}/{action}" in spec["paths"]


def test_logins_are_rate_limited(tmp_path):
    add_user(tmp_path, "ana", "operator", OPERATOR_PW)
    console = Console(tmp_path, "--health-every", "0")  # its own: the limit would lock out others
    try:
        client = Client(console.base)
        for _ in range(5):
            assert client.login("ana", "wrong password!").status == 401
        refused = client.login("ana", OPERATOR_PW)  # right, but too soon after five wrong ones
        assert refused.status == 429 and "too many failed sign-ins" in refused.text
        assert "fleet_session" not in refused.headers.get("set-cookie", "")
    finally:
        console.stop()


def test_user_add_reads_stdin_stores_only_hashes(tmp_path):
    token = add_user(tmp_path, "olga", "operator", "a long enough secret")
    users = tmp_path / ".fleet" / "console" / "users.json"
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    text = users.read_text()
    assert "a long enough secret" not in text and token not in text and "scrypt$" in text
    short = subprocess.run([sys.executable, "-m", "fleet.cli.main", "--project", str(tmp_path),
                            "serve", "user", "add", "pat", "--role", "operator"],
                           input="short\n", capture_output=True, text=True)
    assert short.returncode == 2 and "shorter than 10 characters" in short.stderr
    assert "pat" not in users.read_text()


def test_a_network_address_without_tls_is_refused_with_the_reason(tmp_path):
    add_user(tmp_path, "olga", "operator", "a long enough secret")
    res = subprocess.run([sys.executable, "-m", "fleet.cli.main", "--project", str(tmp_path),
                          "serve", "--host", "0.0.0.0"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("error: refusing to serve on 0.0.0.0 without TLS")
    assert "--tls-cert" in res.stderr and "--insecure" in res.stderr


def test_pause_on_a_running_rollout_asks_the_runner_through_the_journal(site):
    root, console, _, _ = site
    project = Project.locate(root)
    running = Journal.create(project, header={}, devices=["berlin-09"])  # we hold its run lock
    try:
        operator = Client(console.base)
        operator.login("ana", OPERATOR_PW)
        page = operator.get(f"/rollouts/{running.id}").text
        assert 'id="action-pause"' in page and 'id="action-resume"' not in page
        answer = operator.post(f"/rollouts/{running.id}/pause", {"csrf": operator.csrf()})
        assert answer.status == 303 and answer.headers["location"].endswith("?done=pause")
        asked = [e for e in running.events() if e["event"] == "pause_requested"]
        assert [e["reason"] for e in asked] == ["pause requested by ana from the console"]
        assert running.pause_poll() == "pause requested by ana from the console"
    finally:
        running.release()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the client trusts exactly this one)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "console.crt", folder / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_under_tls_the_session_cookie_is_secure(tmp_path):
    add_user(tmp_path, "ana", "operator", OPERATOR_PW)
    cert, key = _self_signed(tmp_path)
    console = Console(tmp_path, "--health-every", "0", "--tls-cert", str(cert),
                      "--tls-key", str(key))
    try:
        client = Client(console.base.replace("http://", "https://"), cafile=str(cert))
        answer = client.login("ana", OPERATOR_PW)
        assert answer.status == 303
        cookie = answer.headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    finally:
        console.stop()


def test_a_hostile_name_in_the_url_comes_back_as_text(site):
    _, console, _, _ = site
    client = Client(console.base)
    client.login("vic", VIEWER_PW)
    answer = client.get("/devices/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert answer.status == 404
    assert "device &#39;&lt;img src=x onerror=alert(1)&gt;&#39; is not registered" in answer.text


def test_signing_out_ends_the_live_stream(site):
    import urllib.request

    _, console, _, rollouts = site
    client = Client(console.base)
    client.login("vic", VIEWER_PW)
    csrf = client.csrf()
    req = urllib.request.Request(f"{console.base}/rollouts/{rollouts['b']}/events")
    client.jar.add_cookie_header(req)
    with urllib.request.urlopen(req, timeout=60) as stream:
        assert stream.readline() == b"event: update\n"
        assert client.post("/logout", {"csrf": csrf}).status == 303
        rest = stream.read()  # returns when the server closes the stream
    assert b"event: update" not in rest.split(b"\n\n", 1)[-1]
    assert client.get(f"/rollouts/{rollouts['b']}/events").status == 303


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example/", "https://evil.example/"])
def test_sign_in_never_sends_the_browser_to_another_site(site, target):
    _, console, _, _ = site
    client = Client(console.base)
    form = client.get("/login?next=" + urllib.parse.quote(target))
    assert client.post("/login", {"username": "vic", "password": VIEWER_PW, "next": target,
                                  "csrf": hidden(form.text, "csrf")}).headers["location"] == "/"
