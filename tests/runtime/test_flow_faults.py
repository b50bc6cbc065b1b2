"""The fault table of the device-side update flow: the agent SIGKILLed in every state.

Each row names a crash point of `fleet_runtime.flow` (``flow-<state>``: the state
was persisted, its action not yet run; ``flow-<state>-done``: the action ran, the
next state was not yet persisted), the flow state the device is in after the
kill and one boot, and how the update ends. After every kill:

* a copy of the device boots a valid, intact, committed slot (`fleet-agent boot`);
* the flow resumes from its persisted state (push: the controller's next command,
  by the flow state `fleet-agent slots` reports; pull: the daemon started again
  takes the job up) and ends ``done`` on 1.1.0, or rolled back and ``failed`` on
  1.0.0, never with the bad release committed.

Whether the device is also rebooted before the flow resumes (a power cut) or
only the agent is restarted (a crash) is drawn per row from a seed:
``EDGEFLEET_CRASH_SEED``, else a random one; it is printed, and named in every
failure. ``pytest -m crash_full`` runs both variants on every row and every
``-done`` point of the pull table (docs/device-flow.md).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_runtime import flow, slots
from fleet_runtime.agent import cli
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fixtures_mqtt  # noqa: E402
from fixtures_bundle import default_files, make_bundle, make_device, new_key  # noqa: E402
from fixtures_jobs import (  # noqa: E402,F401  (fixtures used by name)
    JobsService,
    bundle_server,
    daemon_procs,
    failing_app,
    publish_bundle,
    start_daemon,
    stop_daemons,
    unhealthy_bundle,
)

mqtt_broker = fixtures_mqtt.mqtt_broker
KEY = new_key()
AGENT = str(Path(sys.executable).parent / "fleet-agent")
SEED_ENV = "EDGEFLEET_CRASH_SEED"
SELFTEST_FAILS = b"#!/bin/sh\necho 'camera pipeline did not start' >&2\nexit 1\n"
PARSER = cli.build_parser()


def run_seed() -> int:
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else random.SystemRandom().randrange(1, 10**9)


SEED = run_seed()


def power_cut(row: tuple[Any, ...]) -> bool:
    """Reboot before resuming (a power cut) or only restart the agent: drawn from the seed."""
    return random.Random(f"{SEED}:{row}").random() < 0.5


def agent(layout: Layout, *argv: str) -> dict[str, Any]:
    """One `fleet-agent` command, in this process (the commands that are not killed)."""
    args = PARSER.parse_args(list(argv))
    try:
        return dict(args.handler(args, layout))
    except AgentError as exc:
        return {"error": exc.code, "message": exc.message}


def killed(layout: Layout, argv: list[str], point: str) -> None:
    """Run one `fleet-agent` command as a process that SIGKILLs itself at `point`."""
    proc = subprocess.run([AGENT, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FLEET_ROOT": str(layout.root),
                               slots.CRASH_ENV: point})
    assert proc.returncode == -signal.SIGKILL and not proc.stdout.strip(), \
        f"{' '.join(argv)} was not killed at {point}: {proc.stdout}{proc.stderr[-500:]}"


def assert_boots_committed(layout: Layout, sim_root: Path) -> None:
    """A copy of the device boots: consistent slots, the booted one intact, a committed one."""
    shutil.copytree(layout.root, sim_root, symlinks=True)
    sim = Layout(sim_root)
    agent(sim, "boot")
    state = slots.read_state(sim)
    assert slots.problems(sim) == [], state
    assert slots.verify_slot(sim, state["active"]) == []
    committed = state["slots"][state["committed_slot"]]
    assert committed["committed"] and committed["version"] in {"1.0.0", "1.1.0"}, state
    assert flow.State(flow.read(sim)["state"])  # a state of the table
    shutil.rmtree(sim_root)


def assert_ended(layout: Layout, final: str) -> None:
    doc, state = flow.read(layout), slots.read_state(layout)
    assert doc["state"] == final and state["state"] == "idle", (doc, state)
    want = "1.1.0" if final == "done" else "1.0.0"
    assert slots.software_version(layout) == want and slots.committed_version(layout) == want
    assert slots.problems(layout) == []
    if final == "failed":  # the release was never committed
        assert not state["slots"]["b"]["committed"] and state["slots"]["b"]["status"] == "failed"


# ---------------------------------------------------------------------------- push

# The controller's commands, in order, for each kind of update (boot = its reboot).
PUSH_RUNS = {
    "good": (("install", "{bundle}", "--activate"), ("boot",), ("commit",)),
    "selftest": (("install", "{bundle}", "--activate"), ("boot",), ("commit",), ("boot",)),
    "operator": (("install", "{bundle}", "--activate"), ("boot",), ("rollback",), ("boot",)),
}
PUSH_TABLE = [
    # (update, command killed (index), crash point, flow state after a boot, how it ends)
    ("good", 0, "flow-installing", "installing", "done"),
    ("good", 0, "flow-installing-done", "installing", "done"),
    ("good", 0, "flow-installed", "installed", "done"),
    ("good", 0, "flow-installed-done", "installed", "done"),
    ("good", 0, "flow-activating", "checking", "done"),  # boot finishes the activation first
    ("good", 0, "flow-activating-done", "checking", "done"),
    ("good", 0, "flow-activated", "checking", "done"),
    ("good", 1, "flow-checking", "checking", "done"),  # one more trial boot
    ("good", 2, "flow-checking-done", "checking", "done"),  # gate passed, not yet recorded
    ("good", 2, "flow-committing", "done", "done"),  # boot finishes the commit first
    ("good", 2, "flow-committing-done", "done", "done"),
    ("good", 2, "flow-done", "done", "done"),
    ("selftest", 2, "flow-checking-done", "checking", "failed"),  # gate failed, not recorded
    ("selftest", 2, "flow-rolling-back", "failed", "failed"),  # boot finishes the rollback
    ("selftest", 2, "flow-rolling-back-done", "failed", "failed"),
    ("selftest", 2, "flow-restoring", "failed", "failed"),
    ("selftest", 3, "flow-failed", "failed", "failed"),
    ("operator", 2, "flow-rolling-back", "failed", "failed"),
    ("operator", 2, "flow-rolling-back-done", "failed", "failed"),
    ("operator", 2, "flow-restoring", "failed", "failed"),
]
# What the controller runs next, by the flow state `fleet-agent slots` reports.
PUSH_NEXT = {
    "installing": ("install", "{bundle}", "--activate"), "installed": ("activate",),
    "activating": ("activate",), "activated": ("boot",), "checking": ("commit",),
    "committing": ("commit",), "rolling-back": ("rollback",), "restoring": ("boot",),
}


@pytest.fixture(scope="module")
def push_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("push")
    files = {**default_files("1.1.0"), "opt/edgefleet/selftest": SELFTEST_FAILS}
    data = {"good": make_bundle(KEY), "operator": make_bundle(KEY),
            "selftest": make_bundle(KEY, files, modes={"opt/edgefleet/selftest": 0o755},
                                    hooks={"selftest": "opt/edgefleet/selftest"})}
    for name, raw in data.items():
        (folder / f"{name}.bundle").write_bytes(raw)
    return {name: folder / f"{name}.bundle" for name in data}


def push_resume(layout: Layout, update: str, bundle: Path) -> None:
    """The controller's continuation: the next command for the state the device reports."""
    for _ in range(8):
        state = agent(layout, "slots")["flow"]["state"]
        if state in ("done", "failed"):
            return
        if state == "checking" and update == "operator":
            agent(layout, "rollback")
            continue
        agent(layout, *(a.format(bundle=bundle) for a in PUSH_NEXT[state]))
    raise AssertionError(f"the flow did not end: {flow.read(layout)}")


def run_push_row(root: Path, row: tuple[Any, ...], bundle: Path, reboot: bool) -> None:
    update, index, point, after_boot, final = row
    layout = make_device(root / "dev", KEY)
    commands = [[a.format(bundle=bundle) for a in c] for c in PUSH_RUNS[update]]
    for command in commands[:index]:
        agent(layout, *command)
    killed(layout, commands[index], point)
    killed_in = point.removeprefix("flow-").removesuffix("-done")
    assert flow.read(layout)["state"] == killed_in
    assert_boots_committed(layout, root / "sim")
    if reboot:
        agent(layout, "boot")
        assert flow.read(layout)["state"] == after_boot
    push_resume(layout, update, bundle)
    assert_ended(layout, final)


@pytest.mark.parametrize("row", PUSH_TABLE, ids=lambda r: f"{r[0]}-{r[2]}")
def test_push_flow_killed_in_state(tmp_path: Path, push_bundles, row) -> None:
    reboot = power_cut(row)
    print(f"\nflow fault seed: {SEED_ENV}={SEED} ({'power cut' if reboot else 'agent crash'})")
    try:
        run_push_row(tmp_path, row, push_bundles[row[0]], reboot)
    except AssertionError as exc:
        pytest.fail(f"{row} ({'power cut' if reboot else 'agent crash'}): {exc}\n"
                    f"reproduce with {SEED_ENV}={SEED}")


@pytest.mark.crash_full
@pytest.mark.parametrize("reboot", [False, True], ids=["agent-crash", "power-cut"])
@pytest.mark.parametrize("row", PUSH_TABLE, ids=lambda r: f"{r[0]}-{r[2]}")
def test_push_flow_killed_in_state_both_ways(tmp_path: Path, push_bundles, row, reboot) -> None:
    run_push_row(tmp_path, row, push_bundles[row[0]], reboot)


def test_every_state_of_the_table_is_killed_in() -> None:
    """The two tables between them cut the flow in every state it can be in."""
    points = {p for _, _, p, _, _ in PUSH_TABLE} | {p for _, p, _, _ in PULL_TABLE}
    states = {p.removeprefix("flow-").removesuffix("-done") for p in points}
    assert states == {s.value for s in flow.State} - {"idle"}  # idle: no update to cut


# ---------------------------------------------------------------------------- pull

PULL_TABLE = [
    # (release, crash point, flow state after a boot, how it ends)
    ("good", "flow-downloading", "downloading", "done"),
    ("good", "flow-downloading-done", "downloading", "done"),
    ("good", "flow-verifying", "verifying", "done"),
    ("good", "flow-verifying-done", "verifying", "done"),
    ("good", "flow-installing", "installing", "done"),
    ("good", "flow-installing-done", "installing", "done"),  # bundle gone: fetched again
    ("good", "flow-installed", "installed", "done"),
    ("good", "flow-installed-done", "installed", "done"),
    ("good", "flow-activating", "checking", "done"),
    ("good", "flow-activating-done", "checking", "done"),
    ("good", "flow-activated", "checking", "done"),
    ("good", "flow-activated-done", "checking", "done"),
    ("good", "flow-rebooting", "checking", "done"),
    ("good", "flow-rebooting-done", "checking", "done"),
    ("good", "flow-checking", "checking", "done"),
    ("good", "flow-checking-done", "checking", "done"),
    ("good", "flow-committing", "done", "done"),
    ("good", "flow-committing-done", "done", "done"),
    ("good", "flow-done", "done", "done"),
    ("unhealthy", "flow-checking-done", "checking", "failed"),
    ("unhealthy", "flow-rolling-back", "failed", "failed"),
    ("unhealthy", "flow-rolling-back-done", "failed", "failed"),
    ("unhealthy", "flow-restoring", "failed", "failed"),
    ("unhealthy", "flow-restoring-done", "failed", "failed"),
    ("unhealthy", "flow-failed", "failed", "failed"),
]


def pull_rows(full: bool) -> list[tuple[str, str, str, str]]:
    """Every state's entry point; the `-done` points too with `full`, else four of them."""
    enter = [r for r in PULL_TABLE if not r[1].endswith("-done")]
    done = [r for r in PULL_TABLE if r[1].endswith("-done")]
    return enter + (done if full else random.Random(SEED).sample(done, 4))


class PullDevice:
    """One row: a device whose daemon dies at the row's point while running the job."""

    def __init__(self, lab: fixtures_mqtt.MqttLab, root: Path, name: str,
                 row: tuple[str, str, str, str], document: dict[str, Any]) -> None:
        self.row, self.name, self.job = row, name, f"job-{name}"
        lab.device(root / name, name, "berlin", interval=30.0)  # MQTT identity, mqtt.json
        self.layout = make_device(root / name, KEY)  # identity with hardware, factory slot
        self.service = JobsService(lab, self.name)
        self.service.add_job(self.job, document)  # queued before the daemon asks for it
        self.proc = start_daemon(self.layout, **{slots.CRASH_ENV: row[1]})

    def died(self) -> None:
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the daemon never reached {self.row[1]}") from None
        assert self.proc.returncode == -signal.SIGKILL, f"the daemon was not killed at {self.row[1]}"

    def final(self) -> dict[str, Any]:
        _, done = self.service.updates.wait_for(
            lambda t, m: m["status"] in ("SUCCEEDED", "FAILED"), 90)
        return done


def run_pull_table(lab: fixtures_mqtt.MqttLab, root: Path, rows: list[tuple[str, str, str, str]],
                   documents: dict[str, dict[str, Any]], procs: list[Any],
                   reboot: bool | None = None, prefix: str = "flowfault") -> None:
    """All rows at once (one device each): kill, check, resume, check the outcome.
    `reboot` None: drawn per row from the seed."""
    devices = [PullDevice(lab, root, f"{prefix}-{i:02d}", row, documents[row[0]])
               for i, row in enumerate(rows)]
    procs.extend(d.proc for d in devices)
    for i, dev in enumerate(devices):
        cut = power_cut(dev.row) if reboot is None else reboot
        try:
            dev.died()
            killed_in = dev.row[1].removeprefix("flow-").removesuffix("-done")
            assert flow.read(dev.layout)["state"] == killed_in
            assert_boots_committed(dev.layout, root / f"sim-{i}")
            if cut:
                agent(dev.layout, "boot")
                assert flow.read(dev.layout)["state"] == dev.row[2]
        except AssertionError as exc:
            stop_daemons([d.proc for d in devices])
            pytest.fail(f"{dev.row} ({'power cut' if cut else 'agent crash'}): {exc}\n"
                        f"reproduce with {SEED_ENV}={SEED}")
        dev.proc = start_daemon(dev.layout)  # the daemon comes back; the job is offered again
        procs.append(dev.proc)
    for dev in devices:
        try:
            done = dev.final()
            want = "SUCCEEDED" if dev.row[3] == "done" else "FAILED"
            assert done["status"] == want, done
            if want == "FAILED":
                assert done["statusDetails"]["code"] == "unhealthy", done
                assert "rolled back" in done["statusDetails"]["reason"], done
            assert_ended(dev.layout, dev.row[3])
        except AssertionError as exc:
            pytest.fail(f"{dev.row}: {exc}\nreproduce with {SEED_ENV}={SEED}")


@pytest.fixture
def pull_documents(bundle_server, failing_app) -> dict[str, dict[str, Any]]:
    folder, base = bundle_server
    return {"good": publish_bundle(folder, base, make_bundle(KEY), "good.bundle"),
            "unhealthy": publish_bundle(folder, base, unhealthy_bundle(KEY, failing_app),
                                        "unhealthy.bundle")}


def test_pull_flow_killed_in_every_state(mqtt_broker, tmp_path: Path, pull_documents,
                                         daemon_procs) -> None:
    print(f"\nflow fault seed: {SEED_ENV}={SEED}")
    run_pull_table(mqtt_broker, tmp_path, pull_rows(full=False), pull_documents, daemon_procs)


@pytest.mark.crash_full
def test_pull_flow_killed_at_every_point_both_ways(mqtt_broker, tmp_path: Path, pull_documents,
                                                   daemon_procs) -> None:
    for reboot in (False, True):
        run_pull_table(mqtt_broker, tmp_path / str(reboot), pull_rows(full=True), pull_documents,
                       daemon_procs, reboot=reboot, prefix=f"flowfull-{int(reboot)}")
