"""Helpers for the console tests: a real `fleet serve` process, an HTTP client that keeps
every body it was sent (for the secrets grep), users, and Debian's Chromium via Selenium."""

from __future__ import annotations

import http.cookiejar
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ci_skips import in_ci

# Every body any test fetched (HTTP responses, SSE streams, the browser's pages): the
# secrets grep runs over all of it.
FETCHED: list[bytes] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_user(root: Path, name: str, role: str, password: str) -> str:
    """`fleet serve user add NAME --role ROLE` with the password on stdin; the API token."""
    res = subprocess.run([sys.executable, "-m", "fleet.cli.main", "--project", str(root),
                          "serve", "user", "add", name, "--role", role],
                         input=password + "\n", capture_output=True, text=True, check=True)
    return res.stdout.strip()


class Console:
    """`fleet serve` on a free loopback port, in its own process."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = root / f"serve-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet.cli.main", "--project", str(root), "serve",
                 "--port", str(self.port), *extra], stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._wait_listening(timeout=60)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fleet serve exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)  # the server is starting: poll its port, bounded above
        raise AssertionError(f"fleet serve not listening after {timeout}s: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Client:
    """A cookie-keeping HTTP client that never follows redirects and records every body."""

    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)
    cafile: str | None = None  # the CA to trust for https://

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers or {})
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()]
        if self.cafile:
            import ssl

            context = ssl.create_default_context(cafile=self.cafile)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(req, timeout=60) as resp:
                answer = Answer(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            answer = Answer(exc.code, dict(exc.headers), exc.read())
        FETCHED.append(answer.body)
        return answer

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: dict[str, str], **headers: str) -> Answer:
        return self.request("POST", path, form=form, headers=headers)

    def login(self, user: str, password: str) -> Answer:
        form = self.get("/login")
        csrf = hidden(form.text, "csrf")
        return self.post("/login", {"username": user, "password": password, "csrf": csrf,
                                    "next": "/"})

    def csrf(self) -> str:
        return hidden(self.get("/").text, "csrf")


def hidden(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


def assert_no_secrets(secrets: list[str]) -> None:
    """None of `secrets` in any byte fetched so far (raw, or as JSON or HTML would escape it)."""
    assert FETCHED, "nothing was fetched"
    for secret in secrets:
        forms = {secret, secret.replace("&", "&amp;"), urllib.parse.quote(secret)}
        for body in FETCHED:
            for form in forms:
                assert form.encode() not in body, f"secret {secret[:3]}... served"


def chrome():  # -> selenium WebDriver
    """Headless Debian Chromium through chromium-driver: installed by scripts/system-deps.sh
    (`make test` as root). Missing: a failure under CI, a skip elsewhere. Nothing is downloaded."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        why = "Debian's chromium and chromium-driver are needed (scripts/system-deps.sh)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))
