"""Deploying a vision application to a 30-device lab: `fleet app deploy` vs `ansible-playbook`.

Run: .venv/bin/python bench/app_deploy.py [--devices 30] [--model-mb 50] [--concurrency 10]
     [--side both|fleet|ansible]

The application is the face-blur example (runtime/examples/face_blur) with its
CenterFace ONNX model grown to ~50 MB (a real ONNX file: the model plus one
large initializer of random weights, loaded like any other; run at the
tests' 320x192 input so 30 runtimes fit on a small machine). Every device has
its own camera: a live mount of the project's RTSP test server
(tests/rtsp_server.py), one per device, registered in the registry.

Both sides deploy the same application to the same lab (real OpenSSH sshd per
device, the real runtime) from the same factory state, in the same run, with
the same batches ``[1, "30%", "100%"]`` (Ansible ``serial``), 10 devices at a
time (``forks = 10``):

(a) the first deployment (version 1.0.0, the 50 MB model included);
(b) a code-only new version (1.0.1: application.py changed, nothing else).

* fleet: ``fleet app deploy BUNDLE -i lab --batches 1,30%,100%`` with the
  camera bound from the registry; each device gets only the blobs it lacks,
  stages, switches and holds its health gate before the next batch starts.
  The gate (each device's etc/fleet/apps.json, see GATE) waits for the runtime
  to answer /health ready with every camera delivering frames, then holds a
  6 s window in which every camera keeps at or above 0.2 fps, inference
  latency stays under its limit and nothing restarts; only then does the
  device commit and the next batch start. While a batch holds its gates the
  next batch's missing blobs are sent ahead (fleet/apps/prestage.py: only
  blobs; nothing is staged or switched before its turn);
* Ansible: ansible-core from PyPI in a bench venv; ``ansible.builtin.copy``
  of the application directory (it skips files whose checksum already
  matches, so (b) sends only the changed file too), then a restart of the
  runtime (stop the old process, start the new one detached: what a
  ``systemctl restart`` does) and a wait until /health is ready with every
  camera delivering frames (polled every second; no window held after it);
  pipelining and ControlPersist on, host keys pinned through the same
  known_hosts.

So fleet does all Ansible does and waits 6 s longer per batch. Both sides
start the same runtime (``fleet_runtime.runtime_cli run``), so what the
runtime's start-up costs (imports, the model, the camera's first frame)
counts on both. After each fleet figure the bench prints where its time went,
from the rollout's journal: before batch 1 (the command's start, the bundle's
check, the plan over every device), then per batch the slowest device's time
to its gate and in it.

Bytes: every SSH connection of both sides goes through a counting TCP relay
in front of each device's sshd (bench/_relay.py): the bytes on the wire, both
ways, encrypted, protocol overhead included; the cameras' RTSP traffic does
not pass it. The load average is printed with each figure: on a shared
machine the wall times follow it. Targets (issue 16): (a) fleet >= 3x faster;
(b) >= 20x fewer bytes and >= 5x faster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import WORK, fleet_cmd, peer_venv  # noqa: E402
from _relay import Counters, Relays  # noqa: E402

from fleet.lab import Lab  # noqa: E402
from fleet.project import Project  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HERE = WORK / "app_deploy"
SECRET = "bench-passphrase"
SERIAL = [1, "30%", "100%"]
EXAMPLE = REPO / "runtime/examples/face_blur"
MODEL_REL = "packages/123456789012-CENTERFACE-1.0/model/centerface.onnx"
CODE_REL = "packages/123456789012-FACE_BLUR_CODE-1.0/src/application.py"
CAMERA_FPS = 1  # 30 CenterFace runtimes share this machine's CPUs: one frame a second each
INPUT = (320, 192)  # CenterFace's input, as the tests run it (fully convolutional)
GATE = {"window_s": 6, "min_fps": 0.2, "poll_s": 0.5}
# The Ansible side of an application update (also bench/playbook_vs_ansible.py): the play's
# vars, then its tasks; {app} names the application, {src} its directory.
APP_VARS = """\
    app_dir: "{{{{ fleet_root }}}}/opt/ansible-apps/{app}"
    pidfile: "{{{{ fleet_root }}}}/run/ansible-{app}.pid"
"""
APP_TASKS = """\
    - name: copy the application
      ansible.builtin.copy: {{src: "{src}/", dest: "{{{{ app_dir }}}}/"}}
    - name: restart the runtime (stop the old one, start the new one detached)
      ansible.builtin.shell: |
        if [ -f {{{{ pidfile }}}} ]; then
          old=$(cat {{{{ pidfile }}}}); kill $old 2>/dev/null
          while kill -0 $old 2>/dev/null; do sleep 0.1; done
        fi
        setsid {python} -m fleet_runtime.runtime_cli run {{{{ app_dir }}}} --threads 1 \\
          --http {{{{ http_port }}}} --camera camera_node={{{{ camera }}}} \\
          > {{{{ fleet_root }}}}/var/log/ansible-{app}.log 2>&1 < /dev/null &
        echo $! > {{{{ pidfile }}}}
    - name: wait until it is ready and every camera delivers frames
      ansible.builtin.uri: {{url: "http://127.0.0.1:{{{{ http_port }}}}/health", return_content: true}}
      register: health
      until: >-
        health.json is defined and health.json.ready and
        (health.json.cameras.values() | map(attribute='frames_out') | min) > 0
      retries: 300
      delay: 1
"""
PLAY = """\
- hosts: lab
  gather_facts: false
  serial: {serial}
  vars:
{app_vars}  tasks:
{app_tasks}"""


def ansible_app(src: Path, app: str) -> tuple[str, str]:
    """The play vars and tasks that copy the application directory `src`, restart its runtime
    (camera ``camera_node`` from the host's ``camera``) and wait until it is ready. The
    inventory gives each host ``fleet_root``, ``http_port`` and ``camera``."""
    return APP_VARS.format(app=app), APP_TASKS.format(src=src, app=app, python=sys.executable)


@dataclass
class Figure:
    seconds: float
    bytes: Counters
    load: float


# ---------------------------------------------------------------------------- the application
def padded_model(source: Path, dest: Path, megabytes: int) -> None:
    """CenterFace plus one initializer of random float32 weights: a real ~`megabytes` MB ONNX
    file that ONNX Runtime loads (it drops the unused initializer after reading it)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    extra = max(0, megabytes * (1 << 20) - source.stat().st_size) // 4
    weights = np.random.default_rng(16).standard_normal(extra, dtype=np.float32)
    model.graph.initializer.append(numpy_helper.from_array(weights, "edgefleet_bench_padding"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))


def make_apps(megabytes: int) -> tuple[Path, Path]:
    """The face-blur app at 1.0.0 with a ~50 MB model, and 1.0.1 that changes only its code."""
    from fleet_runtime.pipeline.models import centerface_model

    v1, v2 = HERE / "face_blur-1.0.0" / "face_blur", HERE / "face_blur-1.0.1" / "face_blur"
    shutil.copytree(EXAMPLE, v1, ignore=shutil.ignore_patterns("__pycache__", "README.md"))
    padded_model(centerface_model(), v1 / MODEL_REL, megabytes)
    small_input(v1 / MODEL_REL.rsplit("/", 2)[0] / "descriptor.json")
    shutil.copytree(v1, v2)
    code = v2 / CODE_REL
    code.write_text(code.read_text() + "\n# 1.0.1: a code-only release (the bench's change)\n")
    return v1, v2


def small_input(descriptor: Path) -> None:
    """Run CenterFace at 320x192 (the tests' size): 30 runtimes share this machine's cores."""
    doc = json.loads(descriptor.read_text())
    doc["mlModelDescriptor"]["inputs"][0]["shape"] = [1, 3, INPUT[1], INPUT[0]]
    doc["mlModelDescriptor"]["onnx"]["preprocess"]["size"] = list(INPUT)
    descriptor.write_text(json.dumps(doc))


def tree_bytes(app: Path) -> int:
    return sum(p.stat().st_size for p in app.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- the lab
def setup() -> Project:
    if HERE.exists():
        stop_everything(Project.locate(HERE))
        shutil.rmtree(HERE)
    HERE.mkdir(parents=True)
    project = Project.locate(HERE)
    (HERE / "fleet.yaml").write_text(
        "health: {disk_warn_pct: 100, disk_fail_pct: 100, mem_warn_pct: 100, mem_fail_pct: 100}\n")
    subprocess.run(fleet_cmd(HERE, "firmware", "keygen", "--no-install-lab"), check=True, capture_output=True,
                   env={**os.environ, "FLEET_RELEASE_PASSPHRASE": SECRET})
    return project


def fresh_lab(project: Project, devices: int) -> Lab:
    """All devices at the factory state (the lab recreated), SSH servers up; started by a
    `fleet lab up` process so its servers belong to init (see rollout_vs_ansible.py)."""
    lab = Lab(project)
    if lab.devices():
        stop_everything(project)
        lab.destroy()
    subprocess.run(fleet_cmd(project.root, "lab", "up", "--sites", "3",
                             "--devices-per-site", str(devices // 3)),
                   check=True, capture_output=True)
    return lab


def through_relays(lab: Lab) -> Relays:
    """Relays for every device, and the lab inventory and known_hosts pointed at them."""
    from ruamel.yaml import YAML

    devices = lab.devices()
    relays = Relays([d.port for d in devices.values()]).start()
    hosts_file = lab.project.inventories / "lab" / "hosts.yaml"
    yaml = YAML()
    hosts = yaml.load(hosts_file.read_text())
    for name, dev in devices.items():
        hosts[name]["port"] = relays.ports[dev.port]
    with hosts_file.open("w") as fh:
        yaml.dump(hosts, fh)
    known = lab.project.root / ".fleet/known_hosts"
    lines = known.read_text().splitlines()
    extra = []
    for dev in devices.values():
        old = f"[{dev.host}]:{dev.port} "
        extra += [f"[{dev.host}]:{relays.ports[dev.port]} " + line[len(old):]
                  for line in lines if line.startswith(old)]
    known.write_text("\n".join(lines + extra) + "\n")
    return relays


def camera_csv(lab: Lab, server_port: int) -> Path:
    """One registry camera per device, on its own mount of the RTSP test server."""
    rows = ["name,device,rtsp_url,username,password,description,tags"]
    for name in sorted(lab.devices()):
        rows.append(f"{name}-cam1,{name},rtsp://127.0.0.1:{server_port}/{name}/cam1,,,"
                    f"bench camera of {name},app=face_blur")
    out = HERE / "cameras.csv"
    out.write_text("\n".join(rows) + "\n")
    return out


def stop_everything(project: Project) -> None:
    """The runtimes both sides started (by their recorded PIDs), then the lab."""
    stop_runtimes(Lab(project))
    subprocess.run(fleet_cmd(project.root, "lab", "down"), capture_output=True)


def stop_runtimes(lab: Lab) -> None:
    """Every application runtime that Ansible's play or the device's supervisor started on a
    lab device (also bench/playbook_vs_ansible.py)."""
    for name in lab.devices():
        root = lab.root(name)
        pids = [_read_pid(path) for path in (root / "run").glob("ansible-*.pid")]
        for record in (root / "run/fleet/apps").glob("*.json"):
            doc = json.loads(record.read_text() or "{}")
            pids += [doc.get("pid"), doc.get("child")]
        for pid in pids:
            if isinstance(pid, int) and _ours(pid):
                os.kill(pid, signal.SIGTERM)


def _read_pid(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text.isdigit() else None


def _ours(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"fleet_runtime" in cmdline or b"fleet-agent" in cmdline


# ---------------------------------------------------------------------------- the two sides
def run_fleet(project: Project, lab: Lab, v1: Path, v2: Path, csv: Path,
              concurrency: int) -> tuple[Figure, Figure]:
    env = {**os.environ, "FLEET_RELEASE_PASSPHRASE": SECRET}
    for argv in (("devices", "register", "-i", "lab"), ("cameras", "import", str(csv))):
        subprocess.run(fleet_cmd(project.root, *argv), check=True, capture_output=True, env=env)
    for name in lab.devices():  # the device's own gate thresholds (etc/fleet/apps.json)
        (lab.layout(name).etc / "apps.json").write_text(json.dumps({"health": GATE}))
    bundles = []
    for app, version in ((v1, "1.0.0"), (v2, "1.0.1")):
        subprocess.run(fleet_cmd(project.root, "app", "build", str(app), "--version", version),
                       check=True, capture_output=True, env=env)
        bundles.append(project.root / "apps" / f"face_blur-{version}.app")
    relays = through_relays(lab)
    try:
        return tuple(_fleet_deploy(project, b, relays, concurrency, env)  # type: ignore[return-value]
                     for b in bundles)
    finally:
        relays.stop()


def _fleet_deploy(project: Project, bundle: Path, relays: Relays, concurrency: int,
                  env: dict[str, str]) -> Figure:
    argv = fleet_cmd(project.root, "app", "deploy", str(bundle), "-i", "lab",
                     "--batches", ",".join(map(str, SERIAL)), "--concurrency", str(concurrency),
                     "-e", "camera_node=tag:app=face_blur", "--json")
    relays.reset()
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    moved = relays.reset()
    (HERE / f"fleet-{bundle.stem}.log").write_text(proc.stdout + proc.stderr)
    report = json.loads(proc.stdout.splitlines()[-1]).get("report", {}) if proc.stdout else {}
    counts = report.get("counts", {})
    if proc.returncode != 0 or set(counts) != {"succeeded"}:
        raise SystemExit(f"fleet app deploy failed ({proc.returncode}, {counts} "
                         f"{report.get('reason')}); log in {HERE / f'fleet-{bundle.stem}.log'}")
    figure = Figure(seconds, moved, os.getloadavg()[0])
    print(row(f"fleet app deploy {bundle.stem}", figure), flush=True)
    print("  " + where_time_went(project, seconds), flush=True)
    return figure


def where_time_went(project: Project, seconds: float) -> str:
    """From the rollout's journal: the time before the first batch (the command's start, the
    bundle's check, the plan over every device), then per batch its slowest device's time
    before its health gate and in it."""
    from fleet.rollout.journal import Journal

    events = Journal.open(project, None).events()
    starts = {e["batch"]: e["t"] for e in events if e.get("event") == "batch_started"}
    batch_of = {e["device"]: e["batch"] for e in events if e.get("event") == "device_started"}
    gate = {e["device"]: e["t"] for e in events
            if e.get("event") == "device_step" and e.get("step") == "health_check"}
    done = {e["device"]: e["t"] for e in events if e.get("event") == "device_finished"}
    end = max(done.values(), default=min(starts.values(), default=0.0))
    parts = [f"before batch 1 {seconds - (end - min(starts.values(), default=end)):.1f} s"]
    for number, began in sorted(starts.items()):
        names = [d for d, b in batch_of.items() if b == number and d in gate and d in done]
        if names:
            before = max(gate[d] - began for d in names)
            held = max(done[d] - gate[d] for d in names)
            parts.append(f"batch {number}: {before:.1f} s to its gate, {held:.1f} s in it")
        elif number in starts:
            parts.append(f"batch {number}: no gate")
    return "; ".join(parts)


def ansible_inventory(lab: Lab, relays: Relays, camera_port: int) -> Path:
    """An INI inventory for the same lab through the relays, host keys pinned (no TOFU)."""
    from fleet.lab.devices import free_port
    from fleet.transport import controller_key

    known = lab.project.root / ".fleet/known_hosts"
    lines = ["[lab]"]
    for name, dev in sorted(lab.devices().items()):
        lines.append(
            f"{name} ansible_host={dev.host} ansible_port={relays.ports[dev.port]} "
            f"fleet_root={lab.root(name)} http_port={free_port()} "
            f"camera=rtsp://127.0.0.1:{camera_port}/{name}/cam1")
    lines += ["", "[lab:vars]", "ansible_user=root",
              f"ansible_ssh_private_key_file={controller_key(lab.project)}",
              "ansible_python_interpreter=/usr/bin/python3",
              f"ansible_ssh_common_args='-o UserKnownHostsFile={known} "
              "-o StrictHostKeyChecking=yes'"]
    out = HERE / "ansible-hosts.ini"
    out.write_text("\n".join(lines) + "\n")
    return out


def run_ansible(lab: Lab, v1: Path, v2: Path, camera_port: int,
                concurrency: int) -> tuple[Figure, Figure]:
    bindir = peer_venv("ansible-core")
    relays = through_relays(lab)
    inventory = ansible_inventory(lab, relays, camera_port)
    env = {**os.environ, "ANSIBLE_FORKS": str(concurrency), "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(HERE / "ansible-tmp"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(HERE / "cp")}
    try:
        return tuple(_ansible_play(bindir, inventory, app, relays, env)  # type: ignore[return-value]
                     for app in (v1, v2))
    finally:
        relays.stop()


def _ansible_play(bindir: Path, inventory: Path, app: Path, relays: Relays,
                  env: dict[str, str]) -> Figure:
    play = HERE / f"deploy-{app.parent.name}.yml"
    app_vars, app_tasks = ansible_app(app, "face_blur")
    play.write_text(PLAY.format(serial=json.dumps(SERIAL), app_vars=app_vars, app_tasks=app_tasks))
    relays.reset()
    start = time.perf_counter()
    proc = subprocess.run([str(bindir / "ansible-playbook"), "-i", str(inventory), str(play)],
                          capture_output=True, text=True, env=env, cwd=HERE)
    seconds = time.perf_counter() - start
    moved = relays.reset()
    log = HERE / f"ansible-{app.parent.name}.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        fatal = [line for line in proc.stdout.splitlines() if "fatal:" in line or "ERROR" in line]
        raise SystemExit(f"ansible-playbook failed ({proc.returncode}); log in {log}:\n"
                         + "\n".join(fatal[:10]))
    figure = Figure(seconds, moved, os.getloadavg()[0])
    print(row(f"ansible-playbook {app.parent.name}", figure), flush=True)
    return figure


# ---------------------------------------------------------------------------- report
def row(label: str, fig: Figure) -> str:
    return (f"{label:<30} {fig.seconds:8.1f} s  {fig.bytes.total / 1e6:10.2f} MB "
            f"(up {fig.bytes.up / 1e6:.2f}, down {fig.bytes.down / 1e6:.2f})  "
            f"load {fig.load:.1f}")


def ratios(name: str, fleet: Figure, ansible: Figure, targets: tuple[float, float]) -> str:
    speed = ansible.seconds / fleet.seconds
    fewer = ansible.bytes.total / max(1, fleet.bytes.total)
    return (f"{name}: {speed:.2f}x faster (target >= {targets[0]:g}x), "
            f"{fewer:.1f}x fewer bytes" + (f" (target >= {targets[1]:g}x)" if targets[1] else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--model-mb", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--side", choices=("both", "fleet", "ansible"), default="both")
    args = parser.parse_args()
    from rtsp_server import start_rtsp_server

    project = setup()
    v1, v2 = make_apps(args.model_mb)
    peer_venv("ansible-core")  # installed before timing anything
    print(f"lab: {args.devices} devices, face_blur {tree_bytes(v1) / 1e6:.1f} MB "
          f"(model {(v1 / MODEL_REL).stat().st_size / 1e6:.1f} MB), batches {SERIAL}, "
          f"concurrency {args.concurrency}, one RTSP camera per device at {CAMERA_FPS} fps; "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    figures: dict[str, tuple[Figure, Figure]] = {}
    lab = Lab(project)
    mounts = [f"{lab_name}/cam1" for lab_name in _names(args.devices)]
    try:
        with start_rtsp_server(h265=False, patterns=mounts, pattern_fps=CAMERA_FPS) as server:
            if args.side in ("both", "fleet"):
                lab = fresh_lab(project, args.devices)
                figures["fleet"] = run_fleet(project, lab, v1, v2,
                                             camera_csv(lab, server.port), args.concurrency)
            if args.side in ("both", "ansible"):
                lab = fresh_lab(project, args.devices)
                figures["ansible"] = run_ansible(lab, v1, v2, server.port, args.concurrency)
    finally:
        stop_everything(project)
    if len(figures) == 2:
        fleet, ansible = figures["fleet"], figures["ansible"]
        print(ratios("(a) first deployment", fleet[0], ansible[0], (3, 0)))
        print(ratios("(b) code-only version", fleet[1], ansible[1], (5, 20)))
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


def _names(devices: int) -> list[str]:
    """The lab's device names for `devices` over 3 sites (fleet lab up's naming)."""
    from fleet.lab.devices import site_name

    return [f"{site_name(s)}-{i:02d}" for s in range(3) for i in range(1, devices // 3 + 1)]


if __name__ == "__main__":
    sys.exit(main())
