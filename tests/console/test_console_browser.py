"""The console in a real browser (Debian's Chromium through chromium-driver) over a real lab:
sign in, the overview, filtering devices, a device page with its camera's snapshot (from a
real runtime on the lab device, fetched over the device's pinned SSH), hostile device text
shown as text, and a rollout started from the CLI watched batch by batch (server-sent events,
no reload) and aborted with the button.

CONSOLE_SCREENSHOTS=DIR saves the overview, a device page and a live rollout as PNGs there
(docs/ holds the ones the README shows).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from consolekit import FETCHED, Client, Console, add_user, assert_no_secrets, chrome

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rollout"))
from lab_rollouts import SECRET, build, lab_project  # noqa: E402

from fleet.registry import Camera, open_registry  # noqa: E402
from fleet.rollout.journal import rollouts_dir  # noqa: E402

pytest.importorskip("onnx")
pytest.importorskip("selenium")
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

PASSWORD = "operator-passphrase-1"
CAMERA_PW = "Lobby-Cam-Secret-77"
HOSTILE = "<script>alert(1)</script>"
HOSTILE_HTML = '<img src=x onerror="alert(2)"><b>front door</b>'
EXAMPLES = Path(__file__).resolve().parents[2] / "runtime" / "examples"
WAIT_S = 180


def _color_app(dest: Path) -> Path:
    """The color_classifier example with its small ONNX model built."""
    app = dest / "color_classifier"
    shutil.copytree(EXAMPLES / "color_classifier", app)
    sys.path.insert(0, str(app))
    try:
        from build_model import build as build_model
    finally:
        sys.path.remove(str(app))
        sys.modules.pop("build_model", None)
    build_model(app / "packages/123456789012-COLOR_MODEL-1.0/model/color.onnx")
    return app


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "fleet-runtime exited"
        assert time.monotonic() < deadline, f"{path} not written in {timeout}s"
        time.sleep(0.2)  # polling the runtime's registration file, bounded above


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-lab")
    lab = lab_project(root, 2, 2, via_cli=True)  # berlin-01/02, lisbon-01/02
    procs: list[subprocess.Popen] = []
    console = None
    try:
        subprocess.run([sys.executable, "-m", "fleet.cli.main", "--project", str(root),
                        "devices", "register", "-i", "lab"], check=True, capture_output=True)
        registry = open_registry(lab.project)
        registry.tag_device("lisbon-02", {"label": HOSTILE})
        registry.write_cameras([Camera("camera_node", "berlin-01", "rtsp://10.0.0.9/live",
                                       "admin", CAMERA_PW, HOSTILE_HTML)], [])
        registry.close()
        # the application runs on berlin-01 (its FLEET_ROOT), its camera a synthetic pattern
        device_root = lab.root("berlin-01")
        runtime = subprocess.Popen(
            [sys.executable, "-m", "fleet_runtime.runtime_cli", "run", str(_color_app(root)),
             "--camera", "camera_node=synthetic:320x180@5", "--http", "0"],
            env={**os.environ, "FLEET_ROOT": str(device_root)},
            stdout=subprocess.DEVNULL, stderr=(root / "runtime.log").open("wb"))
        procs.append(runtime)
        _wait_file(device_root / "run/fleet/runtime.json", runtime)
        add_user(root, "ana", "operator", PASSWORD)
        console = Console(root, "--health-every", "600")
        yield lab, console
    finally:
        if console is not None:
            console.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        lab.down()


@pytest.fixture(scope="module")
def browser():
    driver = chrome()
    yield driver
    driver.quit()


def _page(driver) -> str:
    """The page's HTML, kept for the secrets grep."""
    html = driver.page_source
    FETCHED.append(html.encode())
    return html


def _no_dialog(driver) -> None:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - raises when no dialog is open


def _shot(driver, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        driver.save_screenshot(str(Path(folder) / name))


def _sign_in(driver, console: Console) -> None:
    driver.get(console.base + "/rollouts")
    assert "/login?next=/rollouts" in driver.current_url
    driver.find_element(By.ID, "username").send_keys("ana")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: d.current_url.endswith("/rollouts"))
    assert driver.find_element(By.ID, "who").text == "ana (operator)"


def test_overview_devices_and_a_device_with_its_camera(world, browser):
    lab, console = world
    _sign_in(browser, console)
    browser.get(console.base + "/")
    cards = {c.get_attribute("data-site"): c.text for c in
             browser.find_elements(By.CSS_SELECTOR, "article.card[data-site]")}
    assert set(cards) == {"berlin", "lisbon"} and "2 devices" in cards["berlin"]
    _page(browser)
    _shot(browser, "console-overview.png")

    browser.get(console.base + "/devices")
    browser.execute_script("window.consoleMarker = 'same document'")
    Select(browser.find_element(By.ID, "filter-site")).select_by_value("lisbon")
    WebDriverWait(browser, WAIT_S).until(lambda d: d.current_url.endswith("/devices?site=lisbon"))
    WebDriverWait(browser, WAIT_S).until(
        lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "a.device-link")]
        == ["lisbon-01", "lisbon-02"])
    assert browser.execute_script("return window.consoleMarker") == "same document"  # htmx swap
    assert "&lt;script&gt;" in _page(browser) and HOSTILE in browser.find_element(
        By.ID, "device-table").text  # the hostile tag, as text
    _no_dialog(browser)

    browser.get(console.base + "/devices/berlin-01")
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(
        "var i = document.querySelector('img.snapshot'); return i.complete && i.naturalWidth"))
    size = browser.execute_script(
        "var i = document.querySelector('img.snapshot'); return [i.naturalWidth, i.naturalHeight]")
    assert size == [320, 180]  # the runtime's frame of the synthetic 320x180 camera
    assert browser.find_element(By.CSS_SELECTOR, ".description").text == HOSTILE_HTML
    _no_dialog(browser)
    _page(browser)
    _shot(browser, "console-device.png")
    blocked = [e["message"] for e in browser.get_log("browser") if "Content Security" in e["message"]]
    assert blocked == []  # nothing of ours needed an exception to the CSP


def _text(driver, css: str) -> str:
    """An element's text read in one step (the live page replaces its elements at any time)."""
    return str(driver.execute_script(
        "var e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : ''",
        css))


def _cell(driver, device: str) -> str:
    return _text(driver, f'tr[data-device="{device}"] .outcome')


def _click(driver, element_id: str) -> None:
    """Click a button of the live page, again if an update replaced it under the click."""
    for _ in range(20):
        try:
            driver.find_element(By.ID, element_id).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"#{element_id} kept being replaced")


def test_a_cli_rollout_advances_live_and_the_button_aborts_it(world, browser):
    lab, console = world
    bundle = build(lab, "1.1.0")
    lab.fault("lisbon-01", "slow", seconds=2.0)  # batch 2 stays in flight long enough to abort
    before = set(rollouts_dir(lab.project).glob("*.jsonl"))
    cli = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli.main", "--project", str(lab.project.root), "ota",
         "rollout", str(bundle), "-i", "lab", "--limit", "berlin-02,lisbon-01,lisbon-02",
         "--batches", "1,1,1", "--concurrency", "1", "--order", "inventory"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (new := set(rollouts_dir(lab.project).glob("*.jsonl")) - before):
            assert cli.poll() is None and time.monotonic() < deadline, cli.stderr.read()
            time.sleep(0.1)  # waiting for the CLI to write its journal, bounded above
        rollout_id = new.pop().stem
        browser.get(f"{console.base}/rollouts/{rollout_id}")
        browser.execute_script("window.consoleMarker = 'same document'")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: _cell(d, "berlin-02") == "succeeded")
        wait.until(lambda d: _cell(d, "lisbon-01") == "in_flight")
        assert _cell(browser, "lisbon-02") == "pending"
        assert browser.execute_script("return window.consoleMarker") == "same document"
        assert int(browser.find_element(By.ID, "rollout").get_attribute("data-updates")) >= 2
        _page(browser)
        _shot(browser, "console-rollout.png")
        _click(browser, "action-abort")
        wait.until(lambda d: _text(d, "#rollout-status") == "aborted")
        assert _cell(browser, "lisbon-02") == "not-run"
        assert _cell(browser, "lisbon-01") in ("succeeded", "failed")  # in flight: it finished
        assert "aborted by ana from the console" in _page(browser)
        assert cli.wait(timeout=WAIT_S) == 1  # the CLI's run ended as aborted
        # Retry failed: the console starts `fleet ota retry --failed`, the page follows it
        _click(browser, "action-retry")
        wait.until(lambda d: _cell(d, "lisbon-02") == "succeeded")
        wait.until(lambda d: _text(d, "#rollout-status") == "completed")
    finally:
        if cli.poll() is None:
            cli.terminate()
            cli.wait(timeout=60)
        lab.fault("lisbon-01", "clear")
    # the SSE stream itself, as bytes, goes into the secrets grep too
    client = Client(console.base)
    client.login("ana", PASSWORD)
    import urllib.request

    req = urllib.request.Request(f"{console.base}/rollouts/{rollout_id}/events")
    client.jar.add_cookie_header(req)
    with urllib.request.urlopen(req, timeout=60) as stream:
        first = b""
        while not first.endswith(b"\n\n"):
            first += stream.readline()
    FETCHED.append(first)
    assert first.startswith(b"event: update\n") and b"succeeded" in first
    from fleet.transport import controller_key

    key_lines = controller_key(lab.project).read_text().splitlines()[1:-1]  # the key's body
    assert_no_secrets([CAMERA_PW, PASSWORD, SECRET, *key_lines])


def test_a_device_log_bundle_downloads(world):
    lab, console = world
    client = Client(console.base)
    client.login("ana", PASSWORD)
    answer = client.get("/devices/berlin-02/logs")
    assert answer.status == 200, answer.text[:300]
    assert answer.headers["content-type"] == "application/gzip"
    assert 'filename="berlin-02-' in answer.headers["content-disposition"]
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(answer.body), mode="r:gz") as bundle:
        assert any(n.endswith("agent.log") for n in bundle.getnames())
