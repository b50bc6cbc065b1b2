"""A rolling OTA upgrade of a 30-device lab: `fleet ota rollout` vs `ansible-playbook`.

Run: .venv/bin/python bench/rollout_vs_ansible.py [--devices 30] [--mb 20] [--concurrency 10]
     [--link 10mbit]

Both do the same upgrade of the same lab (real OpenSSH sshd per device, the
real agent, the lab's reboot) from the same factory state, in the same run:
upload a signed 20 MB bundle, install it into the inactive slot, activate,
reboot, verify the reported version, commit; batches ``[1, "30%", "100%"]``
(Ansible ``serial``), 10 devices at a time (``forks = 10``).

* fleet: ``fleet ota rollout BUNDLE --batches 1,30%,100% --concurrency 10``
  (plus its health gate and journal, which Ansible does not have);
* Ansible: ansible-core from PyPI in a bench venv, a play with ``serial``,
  ``copy`` + ``command`` (fleet-agent slots/install/activate/info/commit, the
  lab's power button, the command fleet runs, delegated to localhost),
  pipelining and ControlPersist on,
  host keys pinned through the same known_hosts.

The lab is recreated at its factory version between the two runs. Prints both
wall times, each with the load average, and the ratio. Target (issue 19): fleet at
least 6x faster (issue 6 asked for 3x). With
``--link RATE`` each site sits behind its own shaped uplink (`fleet lab up
--link`) in both runs, so both pay for their bytes and round trips (issue 22).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    WORK,
    add_link_option,
    ansible_inventory,
    fleet_cmd,
    link_label,
    load_now,
    peer_venv,
)

from fleet import firmware  # noqa: E402
from fleet.lab import Lab  # noqa: E402
from fleet.project import Project  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HERE = WORK / "rollout"
SECRET = "bench-passphrase"
SERIAL = [1, "30%", "100%"]
OTA_TASKS = """\
    - name: read the slot state (where uploads go)
      ansible.builtin.command: "{{{{ agent }}}} slots"
      register: slots
      changed_when: false
    - name: remember the upload path
      ansible.builtin.set_fact:
        remote: "{{{{ (slots.stdout | from_json).incoming }}}}/bench.bundle"
    - name: upload the bundle
      ansible.builtin.copy: {{src: "{bundle}", dest: "{{{{ remote }}}}", mode: "0600"}}
    - name: install into the inactive slot
      ansible.builtin.command: "{{{{ agent }}}} install {{{{ remote }}}} --remove-after"
    - name: activate the new slot for a trial boot
      ansible.builtin.command: "{{{{ agent }}}} activate"
    - name: reboot (the lab's power button, the command fleet's inventory names)
      ansible.builtin.command:
        argv: {power_cycle}
      delegate_to: localhost
      register: rebooted
      until: rebooted.rc == 0
      retries: 3
      delay: 1
    - name: reconnect after the reboot
      ansible.builtin.meta: reset_connection
    - name: verify the reported version
      ansible.builtin.command: "{{{{ agent }}}} info"
      register: info
      failed_when: (info.stdout | from_json).software != target
    - name: commit
      ansible.builtin.command: "{{{{ agent }}}} commit"
"""


def ota_tasks(bundle: Path, lab: Lab) -> str:
    """The OTA update as Ansible tasks, the same in this bench and bench/playbook_vs_ansible.py.
    The reboot is the lab's power button, the very command `fleet ota rollout` runs (the
    inventory's ``power_cycle``): both tools pay the same for the lab's simulated reboot."""
    argv = [arg.replace(DEVICE, "{{ inventory_hostname }}") for arg in lab.power_cycle_argv(DEVICE)]
    return OTA_TASKS.format(bundle=bundle, power_cycle=json.dumps(argv))


DEVICE = "DEVICE-NAME"


PLAY = """\
- hosts: lab
  gather_facts: false
  serial: {serial}
  vars:
    target: "{version}"
    agent: "{agent}"
  tasks:
{ota_tasks}"""


def setup(devices: int, mb: int) -> tuple[Project, Path]:
    """A fresh project with a release key and a bundle carrying an `mb` MB model."""
    if HERE.exists():
        Lab(Project.locate(HERE)).down()
        shutil.rmtree(HERE)
    HERE.mkdir(parents=True)
    return release_bundle(HERE, mb)


def release_bundle(here: Path, mb: int) -> tuple[Project, Path]:
    """In the project `here`: the firmware template, a release key and a 1.1.0 bundle
    carrying an `mb` MB model (also bench/playbook_vs_ansible.py)."""
    shutil.copytree(REPO / "firmware", here / "firmware")
    project = Project.locate(here)
    firmware.keygen(project, passphrase=SECRET.encode())
    model = here / "firmware/lab-image/opt/edgefleet/models/big-model.bin"
    with open(model, "wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1 << 20))
    built = firmware.build(project, here / "firmware/lab-1.1.0.yaml", passphrase=SECRET.encode())
    return project, built.path


def fresh_lab(project: Project, devices: int, link: str = "") -> Lab:
    """All devices at the factory version (the lab recreated), SSH servers up.

    Started by a `fleet lab up` process, as an operator would: its SSH servers then
    belong to init once it exits. Started from this (long-lived, busy) process they
    would be its children, and each one a reboot stops would linger as a zombie that
    the lab waits 5 s for, in both runs alike."""
    lab = Lab(project)
    if lab.devices():
        stop_lab(lab)
        lab.destroy()
    link_args = ["--link", link] if link else []
    subprocess.run(fleet_cmd(project.root, "lab", "up", "--sites", "3",
                             "--devices-per-site", str(devices // 3), *link_args),
                   check=True, capture_output=True)
    return lab


def stop_lab(lab: Lab) -> None:
    """`lab down`, then any sshd of this lab that lab.json lost track of (concurrent reboots
    rewrite lab.json without a lock; see the closing note) — found by its config path."""
    lab.down()
    marker = str(lab.dir / "devices") + "/"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and "sshd" in cmdline:
            os.kill(int(proc.name), 15)


def run_fleet(project: Path, bundle: Path, concurrency: int) -> float:
    argv = fleet_cmd(project, "ota", "rollout", str(bundle), "-i", "lab",
                     "--batches", ",".join(map(str, SERIAL)), "--concurrency", str(concurrency),
                     "--json")
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    report = json.loads(proc.stdout.splitlines()[-1])["report"]
    if proc.returncode != 0 or report["counts"].get("succeeded") != report_total(report):
        raise SystemExit(f"fleet rollout did not finish cleanly: {report['counts']} "
                         f"{report['reason']}\n{proc.stderr[-2000:]}")
    return seconds


def report_total(report: dict) -> int:
    return sum(report["counts"].values())


def run_ansible(lab: Lab, bundle: Path, concurrency: int) -> float:
    bindir = peer_venv("ansible-core")
    inventory = ansible_inventory(lab.project.root, lab, HERE / "ansible-hosts.ini")
    play = HERE / "upgrade.yml"
    play.write_text(PLAY.format(
        ota_tasks=ota_tasks(bundle, lab), serial=json.dumps(SERIAL), version="1.1.0",
        agent=Path(sys.executable).parent / "fleet-agent"))
    env = {**os.environ, "ANSIBLE_FORKS": str(concurrency), "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(HERE / "ansible-tmp"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(HERE / "cp")}
    start = time.perf_counter()
    proc = subprocess.run([str(bindir / "ansible-playbook"), "-i", str(inventory), str(play)],
                          capture_output=True, text=True, env=env, cwd=HERE)
    seconds = time.perf_counter() - start
    (HERE / "ansible.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        fatal = [line for line in proc.stdout.splitlines() if "fatal:" in line or "ERROR" in line]
        raise SystemExit(f"ansible-playbook failed ({proc.returncode}); log in "
                         f"{HERE / 'ansible.log'}:\n" + "\n".join(fatal[:10]))
    versions = {row["software"] for row in lab.status()}
    if versions != {"1.1.0"}:
        raise SystemExit(f"ansible left devices at {versions}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=10)
    add_link_option(parser)
    args = parser.parse_args()
    os.environ.setdefault("FLEET_RELEASE_PASSPHRASE", SECRET)
    project, bundle = setup(args.devices, args.mb)
    peer_venv("ansible-core")  # installed before timing anything
    print(f"lab: {args.devices} devices, bundle {bundle.stat().st_size / 1e6:.1f} MB, "
          f"batches {SERIAL}, concurrency {args.concurrency}, {link_label(args.link)}",
          flush=True)
    try:
        lab = fresh_lab(project, args.devices, args.link)
        load = load_now()
        fleet_s = run_fleet(project.root, bundle, args.concurrency)
        print(f"fleet ota rollout : {fleet_s:7.1f} s   (load average {load:.1f} before, "
              f"{load_now():.1f} after)", flush=True)
        lab = fresh_lab(project, args.devices, args.link)
        load = load_now()
        ansible_s = run_ansible(lab, bundle, args.concurrency)
        print(f"ansible-playbook  : {ansible_s:7.1f} s   (load average {load:.1f} before, "
              f"{load_now():.1f} after)", flush=True)
    finally:
        stop_lab(Lab(project))
    print(f"ratio (ansible / fleet): {ansible_s / fleet_s:.2f}x  (target >= 6x, issue 19)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
