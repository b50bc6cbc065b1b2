"""Heartbeats over a real mosquitto (mutual TLS) from lab daemons; `fleet health --source mqtt`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fixtures_mqtt import require_mosquitto
from fleet_runtime.layout import read_json
from fleet_runtime.mqtt import MqttClient, MqttSettings
from labkit import CALM_HEALTH, default_ssh_kind, run_cli, start_lab

from fleet import heartbeats
from fleet.broker import use_local_broker
from fleet.errors import ConfigError
from fleet.lab import Lab
from fleet.lab.mqtt import LabMqtt
from fleet.project import Project

INTERVAL = 0.5


@pytest.fixture(scope="module")
def mqtt_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, LabMqtt]]:
    require_mosquitto()
    root = tmp_path_factory.mktemp("hb-lab")
    (root / "fleet.yaml").write_text(CALM_HEALTH)  # exact verdicts, whatever the host's disk
    lab = start_lab(root, 2, 2, default_ssh_kind())
    mq = LabMqtt(lab.project)
    mq.up({n: lab.root(n) for n in lab.devices()}, INTERVAL)
    yield lab, mq
    mq.down({n: lab.root(n) for n in lab.devices()})
    lab.down()


def wait_until(predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Re-check `predicate` (each check is a round trip to the broker) until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
    raise AssertionError(f"condition not met within {timeout}s")


def health_when(lab: Lab, expect, *args: str) -> tuple[int, dict]:
    """`fleet health --source mqtt` once it reports what `expect(code, report)` wants.

    A heartbeat is stale after three intervals; on a loaded machine a live daemon can miss
    that for a moment, so the test waits for the report instead of taking the first one."""
    seen: list[tuple[int, dict]] = []

    def check():  # type: ignore[no-untyped-def]
        seen[:] = [health_mqtt(lab, *args)]
        return expect(*seen[0]) and seen[0]

    try:
        return wait_until(check)  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(f"never reported as expected; last: {seen}") from None


def verdicts(report: dict) -> dict[str, str]:
    return {d["name"]: d["verdict"] for d in report["devices"]}


def beats(lab: Lab) -> dict[str, dict]:
    return heartbeats.latest(heartbeats.settings_for(lab.project))


def health_mqtt(lab: Lab, *args: str) -> tuple[int, dict]:
    res = run_cli(lab.project.root, "health", "-i", "lab", "--source", "mqtt", "--json", *args)
    return res.exit_code, json.loads(res.stdout)


def test_health_from_heartbeats_needs_no_ssh(mqtt_lab: tuple[Lab, LabMqtt]) -> None:
    lab, _ = mqtt_lab
    wait_until(lambda: len(beats(lab)) == 4)
    for name in lab.devices():
        lab.stop(name)  # every SSH server down: only outbound MQTT is left
    try:
        code, report = health_when(lab, lambda code, report: code == 0)
    finally:
        for name in lab.devices():
            lab.start(name)
    assert verdicts(report) == {"berlin-01": "healthy", "berlin-02": "healthy",
                                "lisbon-01": "healthy", "lisbon-02": "healthy"}, report
    assert code == 0
    hb = next(c for c in report["devices"][0]["checks"] if c["name"] == "heartbeat")
    assert hb["status"] == "ok" and hb["interval_s"] == INTERVAL


def test_stopped_daemon_turns_offline_after_three_intervals(mqtt_lab: tuple[Lab, LabMqtt]) -> None:
    lab, mq = mqtt_lab
    wait_until(lambda: len(beats(lab)) == 4)
    assert mq.stop_daemon("lisbon-02", lab.root("lisbon-02"))
    try:
        last = beats(lab)["lisbon-02"]["time"]
        code, report = health_when(lab, lambda code, report: verdicts(report) == {
            "lisbon-01": "healthy", "lisbon-02": "offline"}, "--site", "lisbon")
        turned = time.time()
        lisbon_02 = next(d for d in report["devices"] if d["name"] == "lisbon-02")
        assert lisbon_02["reason"].startswith("last heartbeat")
        assert turned - last > 3 * INTERVAL  # not before three intervals without a beat
        assert code == 2
    finally:
        mq.start_daemon("lisbon-02", lab.root("lisbon-02"))


def test_lab_device_cannot_forge_another_devices_heartbeat(mqtt_lab: tuple[Lab, LabMqtt]) -> None:
    lab, _ = mqtt_lab
    own = read_json(lab.layout("berlin-01").etc / "mqtt.json")
    forger = MqttClient.connect(MqttSettings.from_dict(own), "berlin-01-forger")
    try:
        forger.publish("edgefleet/berlin/berlin-02/health",
                       {"device": "berlin-02", "verdict": "healthy", "time": time.time() + 3600,
                        "forged": True, "interval_s": INTERVAL})
        # A barrier through the broker: our own marker comes back after every earlier message.
        current = beats(lab)
    finally:
        forger.disconnect()
    assert not current["berlin-02"].get("forged")
    assert current["berlin-02"]["device"] == "berlin-02"


def test_missing_or_stale_heartbeats_are_offline() -> None:
    beat = {"time": 1000.0, "interval_s": 10, "verdict": "healthy", "software": "1.0.0",
            "slot": "a", "checks": []}
    assert heartbeats.to_health("a", "s", beat, now=1029.0).verdict == "healthy"
    stale = heartbeats.to_health("a", "s", beat, now=1031.0)
    assert stale.verdict == "offline" and stale.reason == "last heartbeat 31s ago"
    assert heartbeats.to_health("b", "s", None, now=0).reason == "no heartbeat received"


def test_the_controller_finds_the_projects_broker_from_the_pointer_the_lab_writes(
        tmp_path: Path) -> None:
    """Without `mqtt:` in fleet.yaml the domain reads `.fleet/local-broker.json`, never the
    lab's directories: no pointer is no broker, and the pointer's broker state is used."""
    project = Project.locate(tmp_path)
    with pytest.raises(ConfigError, match="no MQTT broker configured"):
        heartbeats.settings_for(project)
    somewhere = tmp_path / "elsewhere"
    somewhere.mkdir()
    (somewhere / "broker.json").write_text(json.dumps({
        "port": 1883, "pid": 1, "ca": "/ca.crt", "controller_cert": "/c.crt",
        "controller_key": "/c.key", "controller_port": 1884}))
    use_local_broker(project, somewhere)
    settings = heartbeats.settings_for(project)
    assert (settings.endpoint, settings.port, settings.cert) == ("127.0.0.1", 1884, "/c.crt")


def test_lab_up_mqtt_starts_broker_and_daemons_and_down_stops_them(tmp_path: Path) -> None:
    require_mosquitto()
    res = run_cli(tmp_path, "lab", "up", "--sites", "1", "--devices-per-site", "2",
                  "--mqtt", "--heartbeat", str(INTERVAL))
    mq = LabMqtt(Project.locate(tmp_path))
    try:
        assert res.exit_code == 0, res.stderr
        assert mq.broker.running() and len(mq.daemons()) == 2
        res = run_cli(tmp_path, "lab", "fault", "berlin-02", "offline")
        assert res.exit_code == 0 and set(mq.daemons()) == {"berlin-01"}
    finally:
        res = run_cli(tmp_path, "lab", "down")
    assert res.exit_code == 0
    assert not mq.broker.running() and mq.daemons() == {}


def test_watch_repeats_until_interrupted(mqtt_lab: tuple[Lab, LabMqtt]) -> None:
    import os
    import signal
    import subprocess
    import sys

    lab, _ = mqtt_lab
    wait_until(lambda: len(beats(lab)) == 4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli.main", "--project", str(lab.project.root), "health",
         "-i", "lab", "--source", "mqtt", "--json", "--watch", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "COLUMNS": "200"})
    decoder, buffer, docs = json.JSONDecoder(), "", []
    assert proc.stdout is not None
    for line in proc.stdout:  # blocks on the process's output, not on a timer
        buffer += line
        try:
            doc, end = decoder.raw_decode(buffer.strip())
        except ValueError:
            continue
        docs.append(doc)
        buffer = ""
        if len(docs) == 2:
            break
    proc.send_signal(signal.SIGINT)  # during the pause after the second round
    seen = docs[1]["summary"]  # the exit is that round's: 0 healthy, 1 degraded, 2 offline
    expected = (2 if seen["offline"] or seen["unreachable"]
                else 1 if seen["degraded"] or seen["failing"] else 0)
    assert proc.wait(timeout=20) == expected, docs[1]
    assert docs[1]["time"] > docs[0]["time"]
    assert all(d["source"] == "mqtt" and d["summary"]["total"] == 4 for d in docs)


def test_iot_core_mode_reads_the_device_shadows(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemons in `iot-core` mode report to shadows; moto's server stands in for IoT Core."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "eu-central-1"}.items():
            monkeypatch.setenv(key, value)
        endpoint = f"http://{host}:{port}"
        (tmp_path / "fleet.yaml").write_text(
            f"mqtt:\n  mode: iot-core\n  region: eu-central-1\n  endpoint_url: {endpoint}\n")
        iot = boto3.client("iot", endpoint_url=endpoint)
        data = boto3.client("iot-data", endpoint_url=endpoint)
        now = time.time()
        for name, age in (("tokyo-01", 1.0), ("tokyo-02", 400.0)):
            iot.create_thing(thingName=name)
            beat = {"device": name, "time": now - age, "interval_s": 30, "verdict": "healthy",
                    "reason": "", "software": "1.0.0", "slot": "a", "checks": []}
            data.update_thing_shadow(thingName=name, payload=json.dumps(
                {"state": {"reported": {"health": beat}}}).encode())
        iot.create_thing(thingName="tokyo-03")  # never reported
        reports = heartbeats.sweep(Project.locate(tmp_path), [
            ("tokyo-01", "tokyo"), ("tokyo-02", "tokyo"), ("tokyo-03", "tokyo")], now=now)
    finally:
        server.stop()
    assert [(r.name, r.verdict) for r in reports] == [
        ("tokyo-01", "healthy"), ("tokyo-02", "offline"), ("tokyo-03", "offline")]
    assert reports[2].reason == "no heartbeat received"


def test_a_device_with_a_fleet_ca_certificate_heartbeats_with_it(tmp_path: Path) -> None:
    """Provisioned devices use their own device.crt (fleet CA); the lab broker trusts that CA."""
    require_mosquitto()
    from fleet_runtime.layout import Layout, atomic_write, atomic_write_json

    from fleet import pki

    project = Project.locate(tmp_path)
    ca = pki.init_ca(project, org="Acme", passphrase=b"correct-horse-battery")
    issued = ca.issue_device("nairobi-01", serial="SN1", site="nairobi")
    layout = Layout(tmp_path / "dev")
    atomic_write_json(layout.device_json, {"name": "nairobi-01", "site": "nairobi"})
    atomic_write(layout.device_crt, issued.cert_pem)
    atomic_write(layout.device_key, issued.key_pem, mode=0o600)
    mq = LabMqtt(project)
    mq.up({"nairobi-01": layout.root}, INTERVAL)
    try:
        assert read_json(layout.etc / "mqtt.json")["cert"] == str(layout.device_crt)
        found = wait_until(lambda: heartbeats.latest(heartbeats.settings_for(project)))
        assert found["nairobi-01"]["device"] == "nairobi-01"
    finally:
        mq.down({"nairobi-01": layout.root})


PASS = "correct-horse-battery"


def fleet_ca_devices(project: Project, root: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Device roots whose identities come from the fleet CA (as provisioning leaves them)."""
    from fleet_runtime.layout import Layout, atomic_write, atomic_write_json

    from fleet import pki

    ca = pki.load_ca(project, PASS.encode()) if (project.certs / "ca.crt").exists() \
        else pki.init_ca(project, org="Acme", passphrase=PASS.encode())
    roots = {}
    for name in names:
        issued = ca.issue_device(name, serial=f"SN-{name}", site="nairobi")
        ca.record_issued([issued])
        layout = Layout(root / name)
        atomic_write_json(layout.device_json, {"name": name, "site": "nairobi"})
        atomic_write(layout.device_crt, issued.cert_pem)
        atomic_write(layout.device_key, issued.key_pem, mode=0o600)
        roots[name] = layout.root
    return roots


def connect_as(root: Path) -> MqttClient:
    settings = MqttSettings.from_dict(read_json(root / "etc/fleet/mqtt.json"))
    return MqttClient.connect(settings, f"probe-{root.name}-{time.monotonic_ns()}", timeout=5)


def test_a_revoked_device_is_refused_by_the_lab_broker(tmp_path: Path) -> None:
    """`fleet ca revoke` restarts the lab broker with the new CRL: the revoked certificate
    fails the TLS handshake, the others reconnect and heartbeat on."""
    require_mosquitto()
    from fleet_runtime.mqtt import MqttError

    project = Project.locate(tmp_path)
    roots = fleet_ca_devices(project, tmp_path, ("nairobi-01", "nairobi-02"))
    mq = LabMqtt(project)
    port = mq.up(roots, INTERVAL).port
    try:
        for root in roots.values():
            connect_as(root).disconnect()  # both trusted before
        res = run_cli(project.root, "ca", "revoke", "nairobi-01", "--json",
                      env={"FLEET_CA_PASSPHRASE": PASS})
        assert res.exit_code == 0 and json.loads(res.stdout)["lab_broker_restarted"] is True
        assert mq.broker.state().port == port  # same address: the daemons find it again
        with pytest.raises(MqttError):
            connect_as(roots["nairobi-01"])
        connect_as(roots["nairobi-02"]).disconnect()
        found = wait_until(lambda: heartbeats.latest(heartbeats.settings_for(project)))
        assert set(found) == {"nairobi-02"}  # the broker lost retained beats when it restarted
    finally:
        mq.down(roots)


def test_broker_refuses_to_start_on_an_expired_or_missing_crl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired CRL would make mosquitto refuse every fleet-CA device at the handshake:
    say so at start, with the fix; `fleet ca crl` re-signs it."""
    require_mosquitto()
    from fleet import pki
    from fleet.errors import ConfigError

    project = Project.locate(tmp_path)
    roots = fleet_ca_devices(project, tmp_path, ("nairobi-01",))
    past = pki.now_utc() - timedelta(days=pki.CRL_DAYS + 1)
    monkeypatch.setattr(pki, "now_utc", lambda: past)  # signed a month ago: expired now
    pki.load_ca(project, PASS.encode()).write_crl()
    mq = LabMqtt(project)
    with pytest.raises(ConfigError, match=r"crl.pem expired on .*`fleet ca crl` re-signs it"):
        mq.up(roots, INTERVAL)
    assert not mq.broker.running()
    monkeypatch.undo()
    res = run_cli(project.root, "ca", "crl", "--json", env={"FLEET_CA_PASSPHRASE": PASS})
    assert res.exit_code == 0 and json.loads(res.stdout)["lab_broker_restarted"] is False
    try:
        mq.up(roots, INTERVAL)
        connect_as(roots["nairobi-01"]).disconnect()
    finally:
        mq.down(roots)
    (project.certs / "crl.pem").unlink()
    with pytest.raises(ConfigError, match="has no CRL"):
        mq.up(roots, INTERVAL)


def test_a_device_provisioned_after_the_broker_started_makes_it_trust_the_fleet_ca(
    tmp_path: Path,
) -> None:
    """The broker started before `fleet ca init`: the first fleet-CA device to join restarts
    it with the fleet CA (and its CRL) trusted, and heartbeats."""
    require_mosquitto()
    project = Project.locate(tmp_path)
    mq = LabMqtt(project)
    first = mq.up({}, INTERVAL)
    roots: dict[str, Path] = {}
    try:
        roots = fleet_ca_devices(project, tmp_path, ("nairobi-01",))
        assert not mq.broker.trusts(project.certs / "ca.crt")
        assert mq.follow_provisioning("nairobi-01", roots["nairobi-01"])
        assert mq.broker.trusts(project.certs / "ca.crt")
        assert mq.broker.state().pid != first.pid and mq.broker.state().port == first.port
        found = wait_until(lambda: heartbeats.latest(heartbeats.settings_for(project)))
        assert set(found) == {"nairobi-01"}
    finally:
        mq.down(roots)


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_broker_refuses_a_corrupt_or_foreign_crl(tmp_path: Path, damage: str) -> None:
    """A CRL that does not parse, or that another CA signed, stops the start in one line."""
    require_mosquitto()
    from fleet.broker import BrokerCA
    from fleet.errors import ConfigError

    project = Project.locate(tmp_path)
    roots = fleet_ca_devices(project, tmp_path, ("nairobi-01",))
    crl = project.certs / "crl.pem"
    if damage == "truncated":
        crl.write_bytes(crl.read_bytes()[:60])
    else:
        BrokerCA.load_or_create(tmp_path / "other-ca").write_crl(crl)
    mq = LabMqtt(project)
    with pytest.raises(ConfigError, match=r"crl.pem is not a CRL signed by the CA .*ca.crt"):
        mq.up(roots, INTERVAL)
    assert not mq.broker.running()


@pytest.mark.parametrize("index", ["kept", "lost"])
def test_revoke_also_revokes_the_lab_brokers_own_identity_for_the_device(
    tmp_path: Path, index: str
) -> None:
    """Issue 12.8: a lab device that had a broker-CA identity (`mqtt.crt`, given before
    it was provisioned) kept connecting with it after `fleet ca revoke`. "lost": a
    broker CA from before it kept an index; the device's own file names the serial."""
    require_mosquitto()
    from fleet_runtime.mqtt import MqttError

    project = Project.locate(tmp_path)
    roots = fleet_ca_devices(project, tmp_path, ("nairobi-01", "nairobi-02"))
    mq = LabMqtt(project)
    mq.up(roots, INTERVAL)
    try:
        state = mq.broker.state()
        assert state is not None
        lab = Lab(project)
        second = {n: mq.broker.ca.issue(n, lab.layout(n).etc, stem="mqtt") for n in roots}
        if index == "lost":
            (mq.dir / "ca" / "issued.jsonl").unlink()

        def connect_second(name: str) -> MqttClient:
            ident = second[name]
            return MqttClient.connect(
                MqttSettings(endpoint=state.host, port=state.port, cert=str(ident.cert),
                             key=str(ident.key), ca=str(ident.ca)),
                name, timeout=5)

        connect_second("nairobi-01").disconnect()  # trusted before
        res = run_cli(project.root, "ca", "revoke", "nairobi-01", "--json",
                      env={"FLEET_CA_PASSPHRASE": PASS})
        assert res.exit_code == 0, res.stderr
        assert json.loads(res.stdout)["lab_broker_revoked"]
        with pytest.raises(MqttError):
            connect_second("nairobi-01")
        connect_second("nairobi-02").disconnect()  # only the revoked device is refused
    finally:
        mq.down(roots)


def test_lab_processes_do_not_inherit_the_ca_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.8: mosquitto, device daemons and device SSH servers started from a shell
    holding FLEET_CA_PASSPHRASE had it in their environment."""
    require_mosquitto()
    monkeypatch.setenv("FLEET_CA_PASSPHRASE", PASS)
    lab = start_lab(tmp_path, 1, 1, default_ssh_kind())
    mq = LabMqtt(lab.project)
    roots = {n: lab.root(n) for n in lab.devices()}
    try:
        state = mq.up(roots, INTERVAL)
        pids = [state.pid, *mq.daemons().values(), *(lab.device(n).pid for n in roots)]
        assert len(pids) == 3
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"FLEET_CA_PASSPHRASE" not in environ and PASS.encode() not in environ, pid
    finally:
        mq.down(roots)
        lab.down()
