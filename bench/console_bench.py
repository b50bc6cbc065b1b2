"""The console at fleet scale: the devices page over 10,000 registered devices, and how soon a
journal event reaches a browser watching the rollout page (server-sent events).

Run: .venv/bin/python bench/console_bench.py [--devices 10000] [--pages 40]
Prints the median and p95 server time per devices page (the console's Server-Timing header:
request in to response head out, the whole page rendered) and the round trip seen by the
client; then the SSE latency from a journal append to the row changing in headless Chromium
(Debian's, via chromium-driver; a plain HTTP reader of the stream when it is missing).
Targets: median page < 100 ms; SSE update < 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "console"))
from consolekit import Client, Console, add_user  # noqa: E402

from fleet.project import Project  # noqa: E402
from fleet.registry import open_registry  # noqa: E402
from fleet.rollout.journal import Journal  # noqa: E402

PASSWORD = "bench-passphrase-1"
SITES = 40
FILTERS = ["", "site=site-07", "verdict=unchecked", "tag=ring=canary", "q=-01", "sort=site&desc=1"]


def fill(project: Project, count: int) -> None:
    registry = open_registry(project)
    with registry.transaction():  # one transaction: 10,000 rows in seconds
        for i in range(count):
            registry._upsert(f"dev-{i:05d}", {  # noqa: SLF001 - bulk fill for the bench only
                "site": f"site-{i % SITES:02d}", "hardware": "jetson-orin", "arch": "aarch64",
                "software_current": "1.0.0" if i % 3 else "1.1.0",
                "tags": {"ring": "canary"} if i % 50 == 0 else {}})
    registry.close()


def pages(client: Client, count: int) -> tuple[list[float], list[float]]:
    server, round_trip = [], []
    for n in range(count):
        query = FILTERS[n % len(FILTERS)]
        page = 1 + (n * 7) % 20 if not query else 1
        start = time.perf_counter()
        answer = client.get(f"/devices?{query}&page={page}")
        round_trip.append((time.perf_counter() - start) * 1000)
        assert answer.status == 200, answer.status
        server.append(float(answer.headers["server-timing"].split("dur=")[1]))
    return server, round_trip


def sse_latency_browser(console: Console, project: Project, rollout: str, rounds: int
                        ) -> list[float]:
    from consolekit import chrome
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome()
    try:
        driver.get(console.base + "/login")
        driver.find_element(By.ID, "username").send_keys("ana")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "sign-in").click()
        driver.get(f"{console.base}/rollouts/{rollout}")
        journal = Journal.open(project, rollout)
        out = []
        for n in range(rounds):
            step = f"step-{n}"
            # the browser notes the wall-clock moment the row shows the new step
            driver.execute_script("""
                window.seenAt = null; var want = arguments[0];
                new MutationObserver(function (m, obs) {
                  if (document.body.textContent.indexOf(want) >= 0) {
                    window.seenAt = performance.timeOrigin + performance.now(); obs.disconnect();
                  }
                }).observe(document.body, {childList: true, subtree: true});""", step)
            sent = time.time() * 1000
            journal.append({"event": "device_step", "device": "dev-00000", "step": step})
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.seenAt"))
            out.append(float(driver.execute_script("return window.seenAt")) - sent)
        return out
    finally:
        driver.quit()


def sse_latency_http(console: Console, project: Project, rollout: str, rounds: int
                     ) -> list[float]:
    import urllib.request

    client = Client(console.base)
    client.login("ana", PASSWORD)
    req = urllib.request.Request(f"{console.base}/rollouts/{rollout}/events")
    client.jar.add_cookie_header(req)
    journal = Journal.open(project, rollout)
    out = []
    with urllib.request.urlopen(req, timeout=60) as stream:
        _read_event(stream)  # the page as it is now
        for n in range(rounds):
            sent = time.perf_counter()
            journal.append({"event": "device_step", "device": "dev-00000", "step": f"s{n}"})
            _read_event(stream)
            out.append((time.perf_counter() - sent) * 1000)
    return out


def _read_event(stream) -> bytes:  # type: ignore[no-untyped-def]
    data = b""
    while not data.endswith(b"\n\n") or data.startswith(b":"):
        if data.startswith(b":") and data.endswith(b"\n\n"):
            data = b""  # a keep-alive comment, not an update
        data += stream.readline()
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--sse-rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        root = Path(tmp)
        project = Project.locate(root)
        started = time.perf_counter()
        fill(project, args.devices)
        print(f"registered {args.devices} devices in {time.perf_counter() - started:.1f}s")
        add_user(root, "ana", "operator", PASSWORD)
        rollout = Journal.create(project, header={"version": "1.1.0"}, devices=["dev-00000"])
        rollout.append({"event": "planned", "batches": [["dev-00000"]],
                        "sites": {"dev-00000": "site-00"}})
        console = Console(root, "--health-every", "0")
        try:
            client = Client(console.base)
            client.login("ana", PASSWORD)
            client.get("/devices")  # the first request reads the registry
            server, trip = pages(client, args.pages)
            p95 = sorted(server)[int(0.95 * (len(server) - 1))]
            print(f"devices page, {args.devices} devices, {len(server)} pages "
                  f"(filters, sorts, paging): server median {statistics.median(server):.1f} ms, "
                  f"p95 {p95:.1f} ms; client round trip median {statistics.median(trip):.1f} ms "
                  "(target: median < 100 ms)")
            overview = [float(client.get("/").headers["server-timing"].split("dur=")[1])
                        for _ in range(10)]
            print(f"overview page, {args.devices} devices in {SITES} sites: server median "
                  f"{statistics.median(overview):.1f} ms")
            browser = bool(shutil.which("chromium") and shutil.which("chromedriver"))
            measure = sse_latency_browser if browser else sse_latency_http
            lat = measure(console, project, rollout.id, args.sse_rounds)
            print(f"SSE: journal append -> {'browser DOM' if browser else 'HTTP reader'}: "
                  f"median {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms over "
                  f"{len(lat)} events (target: < 1000 ms)")
        finally:
            console.stop()
            rollout.release()


if __name__ == "__main__":
    main()
