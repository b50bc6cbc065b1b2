"""One maintenance play on a 30-device lab: `fleet play` vs `ansible-playbook`, side by side.

Run: .venv/bin/python bench/playbook_vs_ansible.py [--devices 30] [--mb 20] [--forks 10]
     [--window 2] [--side both|fleet|ansible]

The same three tasks on the same lab (real OpenSSH sshd per device, the real
agent, the lab's reboot, the real application runtime), from the same factory
state, in one run:

1. health check: the agent's report, the device failed unless healthy;
2. OTA install of a signed bundle (``--mb`` MB of model inside): upload,
   install into the inactive slot, activate, reboot, verify the reported
   version, commit;
3. application update: the colour classifier example (runtime/examples/
   color_classifier, its tiny ONNX model built here: 30 runtimes fit on a
   2-core machine), its camera a live test pattern of the project's RTSP test
   server (tests/rtsp_server.py, one shared mount at CAMERA_FPS), registered
   per device in the registry. Deployed, started, and held healthy for the same
   ``--window`` seconds on both sides.

* fleet: ``fleet play bench.yaml -i lab`` (the built-in operations ``health.check``,
  ``ota.install``, ``app.deploy``, with their decisions and health gates, which
  the Ansible play does not have), concurrency ``--forks``; the app's gate
  window is the task's ``health: {window_s: --window}``;
* Ansible: ansible-core from PyPI in a bench venv, ``command`` + ``copy`` on
  ``fleet-agent`` (as bench/rollout_vs_ansible.py), the lab's reboot delegated
  to localhost, then bench/app_deploy.py's application tasks (copy the app
  directory, restart the runtime, wait until /health is ready with frames) and
  a hold of the same ``--window`` seconds with a second /health check;
  pipelining and ControlPersist on, ``forks = --forks``, host keys pinned
  through the same known_hosts.

The lab is recreated at its factory version between the two runs (every
runtime stopped). Prints both wall times, the ratio, the load average around
each run (the figures mean little on a loaded machine) and where the fleet
play's time went, per task (from its journal). Target (issue 17): fleet >= 3x
faster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import WORK, ansible_inventory, fleet_cmd, peer_venv  # noqa: E402
from app_deploy import ansible_app, stop_runtimes  # noqa: E402
from rollout_vs_ansible import SECRET, fresh_lab, ota_tasks, release_bundle, stop_lab  # noqa: E402

from fleet import health  # noqa: E402
from fleet.lab import Lab  # noqa: E402
from fleet.project import Project  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HERE = WORK / "playbook"
APP = "color_classifier"
EXAMPLE = REPO / "runtime/examples" / APP
MODEL_REL = "packages/123456789012-COLOR_MODEL-1.0/model/color.onnx"
CAMERA_MOUNT = "bench/cam"
CAMERA_FPS = 2
CAMERA_TAG = "tag:app=color"
# The shared machine's disk and memory must not make a lab device degraded (both sides).
CALM = ("concurrency: {forks}\nrollout: {{concurrency: {forks}}}\nhealth: {{disk_warn_pct: 100, disk_fail_pct: 100, "
        "mem_warn_pct: 100, mem_fail_pct: 100, load_warn_per_cpu: 1000}}\n")

FLEET_PLAY = """\
- name: monthly maintenance
  hosts: all
  tasks:
    - name: health check
      health.check: {{}}
    - name: OTA install
      ota.install: {{bundle: "{bundle}"}}
    - name: application update
      register: app
      app.deploy:
        bundle: "{app}"
        sets: ["camera_node={camera}"]
        health: {{window_s: {window}, min_fps: 0.5, poll_s: 0.5, startup_s: 240}}
"""

ANSIBLE_PLAY = """\
- hosts: lab
  gather_facts: false
  vars:
    agent: "{agent}"
    target: "{version}"
{app_vars}  tasks:
    - name: health check
      ansible.builtin.command: "{{{{ agent }}}} health {health_flags}"
      register: report
      changed_when: false
      failed_when: (report.stdout | from_json).verdict != "healthy"
{ota_tasks}{app_tasks}{hold}"""
# The health window fleet's gate holds, held on Ansible's side too: wait, then the runtime
# must still be ready and its camera must have delivered more frames.
HOLD = """\
    - name: hold the health window
      ansible.builtin.wait_for: {{timeout: {window}}}
      delegate_to: localhost
    - name: still ready, frames still flowing
      ansible.builtin.uri: {{url: "http://127.0.0.1:{{{{ http_port }}}}/health", return_content: true}}
      register: held
      failed_when: >-
        not held.json.ready or
        (held.json.cameras.values() | map(attribute='frames_out') | min) <=
        (health.json.cameras.values() | map(attribute='frames_out') | min)
"""


def setup(mb: int, forks: int) -> tuple[Project, Path, Path]:
    """A fresh project with a release key, a bundle carrying an `mb` MB model and the
    colour classifier's source (its model built)."""
    if HERE.exists():
        stop_all(Project.locate(HERE))
        shutil.rmtree(HERE)
    HERE.mkdir(parents=True)
    (HERE / "fleet.yaml").write_text(CALM.format(forks=forks))
    project, bundle = release_bundle(HERE, mb)
    return project, bundle, color_app(HERE / "app-src")


def color_app(dest: Path) -> Path:
    """The colour classifier example with its ONNX model built (its build script left out)."""
    app = dest / APP
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__", "build_model.py"))
    sys.path.insert(0, str(EXAMPLE))
    try:
        from build_model import build
    finally:
        sys.path.remove(str(EXAMPLE))
    build(app / MODEL_REL)
    return app


def stop_all(project: Project) -> None:
    lab = Lab(project)
    stop_runtimes(lab)
    stop_lab(lab)


@dataclass
class Ran:
    """A controller run: its output, wall and CPU seconds, and when each output line came."""

    rc: int
    out: str
    seconds: float
    cpu: float  # user + system of it and the children it waited for (not the lab's sshd)
    lines: list[tuple[float, str]]


def timed_run(argv: list[str], **kwargs: Any) -> Ran:
    """`argv` run to the end, its stdout lines stamped as they arrive (stderr kept)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))  # type: ignore[union-attr]
    reader.start()
    lines = [(time.perf_counter() - start, line) for line in proc.stdout]  # type: ignore[union-attr]
    reader.join()
    rc = proc.wait()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Ran(rc, "".join(line for _, line in lines) + "".join(err), seconds, cpu, lines)


def ansible_tasks(lines: list[tuple[float, str]]) -> str:
    """Ansible's wall seconds per task (over all hosts: its linear strategy starts a task
    once every host finished the one before), from the moments its TASK lines appeared."""
    marks = [(t, line.strip()[6:].split("]")[0]) for t, line in lines
             if line.startswith(("TASK [", "PLAY RECAP"))]
    spent: dict[str, float] = {}  # a `meta` task prints its TASK line once per host
    for (t, name), (end, _) in zip(marks, marks[1:], strict=False):
        spent[name] = spent.get(name, 0.0) + end - t
    return "\n".join(f"  {name[:40]:<40} {seconds:6.1f} s" for name, seconds in spent.items())


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} CPUs"


# ---------------------------------------------------------------------------- fleet
def register(project: Project, lab: Lab, camera_url: str) -> None:
    """The devices in the registry, and one camera each (the same live mount)."""
    rows = ["name,device,rtsp_url,username,password,description,tags"]
    rows += [f"{name}-cam1,{name},{camera_url},,,bench camera of {name},app=color"
             for name in sorted(lab.devices())]
    csv = HERE / "cameras.csv"
    csv.write_text("\n".join(rows) + "\n")
    for argv in (("devices", "register", "-i", "lab"), ("cameras", "import", str(csv))):
        subprocess.run(fleet_cmd(project.root, *argv), check=True, capture_output=True)


def build_app(project: Project, src: Path) -> Path:
    subprocess.run(fleet_cmd(project.root, "app", "build", str(src), "--version", "1.0.0"),
                   check=True, capture_output=True)
    return project.root / "apps" / f"{APP}-1.0.0.app"


def run_fleet(project: Project, bundle: Path, app: Path, window: float) -> Ran:
    play = HERE / "bench.yaml"
    play.write_text(FLEET_PLAY.format(bundle=bundle, app=app, camera=CAMERA_TAG, window=window))
    argv = fleet_cmd(project.root, "play", str(play), "-i", "lab", "--json")
    ran = timed_run(argv, cwd=HERE)
    (HERE / "fleet.log").write_text(ran.out)
    if ran.rc != 0:
        raise SystemExit(f"fleet play failed ({ran.rc}); log in {HERE / 'fleet.log'}:\n"
                         + ran.out[-2000:])
    check_versions(Lab(project), "fleet")
    return ran


def where_time_went(project: Project) -> str:
    """Per task, the mean and max seconds a device spent in it (from the play's journal: the
    gap between a device's consecutive journal events), and the application update's steps
    (their seconds as the task registered them)."""
    journal = max((project.state_dir / "plays").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    last: dict[str, float] = {}
    spent: dict[str, list[float]] = defaultdict(list)
    for line in journal.read_text().splitlines():
        event = json.loads(line)
        device = event.get("device")
        if not device or "t" not in event:
            continue
        if event["event"] == "task_done" and device in last:
            spent[event["name"]].append(event["t"] - last[device])
            for step, seconds in ((event.get("value") or {}).get("steps") or {}).items():
                spent[f"  app {step}"].append(seconds or 0.0)
        last[device] = event["t"]
    return "\n".join(f"  {name:<22} mean {sum(v) / len(v):5.1f} s, max {max(v):5.1f} s"
                     for name, v in spent.items())


# ---------------------------------------------------------------------------- ansible
def run_ansible(lab: Lab, bundle: Path, app: Path, forks: int, camera_url: str,
                window: float) -> Ran:
    from fleet.lab.devices import free_port

    bindir = peer_venv("ansible-core")
    inventory = ansible_inventory(
        lab.project.root, lab, HERE / "ansible-hosts.ini",
        lambda name: f"fleet_root={lab.root(name)} http_port={free_port()} camera={camera_url}")
    app_vars, app_tasks = ansible_app(app, APP)
    play = HERE / "maintenance.yml"
    play.write_text(ANSIBLE_PLAY.format(
        ota_tasks=ota_tasks(bundle, lab),
        version="1.1.0", agent=Path(sys.executable).parent / "fleet-agent",
        health_flags=" ".join(health.agent_flags(lab.project)), app_vars=app_vars,
        app_tasks=app_tasks, hold=HOLD.format(window=window)))
    env = {**os.environ, "ANSIBLE_FORKS": str(forks), "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(HERE / "ansible-tmp"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(HERE / "cp")}
    ran = timed_run([str(bindir / "ansible-playbook"), "-i", str(inventory), str(play)],
                    env=env, cwd=HERE)
    (HERE / "ansible.log").write_text(ran.out)
    if ran.rc != 0:
        fatal = [line for line in ran.out.splitlines() if "fatal:" in line or "ERROR" in line]
        raise SystemExit(f"ansible-playbook failed ({ran.rc}); log in "
                         f"{HERE / 'ansible.log'}:\n" + "\n".join(fatal[:10]))
    check_versions(lab, "ansible")
    return ran


def check_versions(lab: Lab, who: str) -> None:
    versions = {row["software"] for row in lab.status()}
    if versions != {"1.1.0"}:
        raise SystemExit(f"{who} left devices at {versions}")


# ---------------------------------------------------------------------------- the run
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--window", type=float, default=2.0,
                        help="seconds the application is held healthy, on both sides")
    parser.add_argument("--side", choices=("both", "fleet", "ansible"), default="both")
    args = parser.parse_args()
    os.environ.setdefault("FLEET_RELEASE_PASSPHRASE", SECRET)
    from rtsp_server import start_rtsp_server

    project, bundle, src = setup(args.mb, args.forks)
    app = build_app(project, src)
    peer_venv("ansible-core")  # installed before timing anything
    print(f"lab: {args.devices} devices, bundle {bundle.stat().st_size / 1e6:.1f} MB, "
          f"tasks: health check, OTA install, application update ({APP}, health window "
          f"{args.window:g} s both sides, camera {CAMERA_FPS} fps), forks/concurrency "
          f"{args.forks}", flush=True)
    seconds: dict[str, float] = {}
    try:
        with start_rtsp_server(h265=False, patterns=[CAMERA_MOUNT],
                               pattern_fps=CAMERA_FPS) as server:
            if args.side in ("both", "fleet"):
                lab = fresh_lab(project, args.devices)
                register(project, lab, server.url(CAMERA_MOUNT))
                before = load()
                ran = run_fleet(project, bundle, app, args.window)
                seconds["fleet"] = ran.seconds
                print(f"fleet play       : {ran.seconds:7.1f} s, controller CPU {ran.cpu:6.1f} s"
                      f"   ({before} before, {load()} after)\nfleet, per device and task:\n"
                      f"{where_time_went(project)}", flush=True)
                stop_runtimes(lab)
            if args.side in ("both", "ansible"):
                lab = fresh_lab(project, args.devices)
                before = load()
                ran = run_ansible(lab, bundle, src, args.forks, server.url(CAMERA_MOUNT),
                                  args.window)
                seconds["ansible"] = ran.seconds
                print(f"ansible-playbook : {ran.seconds:7.1f} s, controller CPU {ran.cpu:6.1f} s"
                      f"   ({before} before, {load()} after)\nansible, per task (all hosts):\n"
                      f"{ansible_tasks(ran.lines)}", flush=True)
    finally:
        stop_all(project)
    if len(seconds) == 2:
        print(f"ratio (ansible / fleet): {seconds['ansible'] / seconds['fleet']:.2f}x  "
              "(target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
