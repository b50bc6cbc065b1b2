"""`--json` on every command that has it: stdout is exactly one JSON object.

The commands are found by walking the typer app, so a new command with a
`--json` option fails `test_every_json_command_is_in_the_scenario` until it is
added to SCENARIO below. The scenario runs each of them, in order, on one
small project with a 1-site x 2-device lab, and checks that stdout holds one
JSON object, and for a listing or report that it names a list or an object
(`{"devices": [...]}`), as the README promises.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
from labkit import default_ssh_kind, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parent / "runtime"))  # for panorama_apps
from panorama_apps import write_app  # noqa: E402

from fleet.cli.main import app
from fleet.lab import Lab
from fleet.project import Project

REPO = Path(__file__).resolve().parent.parent
ENV = {"FLEET_CA_PASSPHRASE": "json-test-ca", "FLEET_RELEASE_PASSPHRASE": "json-test-release"}
BUNDLE = "{root}/out/edgefleet-os-1.1.0.bundle"  # paths are absolute: the CLI runs in this cwd
APP = "{root}/apps/tracker_plain-1.0.0.app"
CAMERAS = "name,device,rtsp_url,username,password,description,tags\n" \
          "door,berlin-01,rtsp://127.0.0.1:9/door,admin,s3cret-door,front door,\n"
PLAY_OP = ("from fleet.play.operations import Outcome, operation\n"
           "@operation('json.hello')\n"
           "def hello(ctx, *, who: str = 'x') -> Outcome:\n"
           "    return Outcome(data={'who': who})\n")


@dataclass(frozen=True)
class Step:
    command: str                  # "devices list": the command's path under `fleet`
    args: tuple[str, ...] = ()
    listing: bool = True          # a listing or report: must name a list or an object
    exits: tuple[int, ...] = (0,)
    stream: bool = False          # JSON Lines: events, then {"report": ...}
    stdin: str | None = None      # what a script pipes in (a console user's password)


# Every command with --json, in an order where each finds what it needs.
SCENARIO = (
    Step("ca init", ("--org", "Acme"), listing=False),
    Step("ca show", listing=False),
    Step("ca crl", listing=False),
    Step("firmware keygen", listing=False),
    Step("app import-panorama", ("{root}/panorama/tracker_plain", "--out", "{root}/apps-src/t"),
         listing=False),
    Step("app build", ("{root}/apps-src/t", "--version", "1.0.0")),
    Step("app inspect", (APP,)),
    Step("app verify", (APP,)),
    Step("app list"),
    Step("lab up", ("--sites", "1", "--devices-per-site", "2", "--ssh", "{ssh}")),
    Step("lab status"),
    Step("inventory list", ("-i", "lab")),
    Step("inventory check", ("-i", "lab")),
    Step("health", ("-i", "lab"), exits=(0, 1)),  # 1: degraded by a loaded machine, still a report
    Step("logs export", ("-i", "lab", "--out", "{root}/logs")),
    Step("devices register", ("-i", "lab")),
    Step("devices refresh", ("-i", "lab")),
    Step("devices list"),
    Step("devices show", ("berlin-01",)),
    Step("devices tag", ("berlin-01", "role=door"), listing=False),
    Step("cameras import", ("{root}/cameras.csv",)),
    Step("cameras list"),
    Step("cameras show", ("door",)),
    Step("app explain", ("berlin-01", APP, "-i", "lab", "-e", "front_door=door")),
    Step("cameras probe", ("--all", "--timeout", "2"), exits=(1,)),  # nothing listens on :9
    Step("secrets rotate", listing=False),
    Step("cameras remove", ("door",)),
    Step("firmware build", ("{root}/firmware/lab-1.1.0.yaml", "--out", "{root}/out"), listing=False),
    Step("firmware inspect", (BUNDLE,)),
    Step("firmware verify", (BUNDLE,)),
    Step("firmware list"),
    Step("ota version", (BUNDLE,), listing=False),
    Step("ota plan", (BUNDLE, "-i", "lab")),
    Step("ota install", ("berlin-01", BUNDLE, "-i", "lab")),
    # rollout, resume and retry stream their events, one JSON object a line (fleet/cli/rollout_view.py)
    Step("ota rollout", (BUNDLE, "-i", "lab", "--batches", "1,100%", "--pause-after-batch"),
         stream=True),
    Step("ota status"),
    Step("ota abort"),
    Step("ota retry", ("--failed",), stream=True),
    Step("ota rollout", (BUNDLE, "-i", "lab", "--batches", "1,100%", "--pause-after-batch"),
         stream=True),
    Step("ota resume", stream=True),
    # archives re-pin a device's host key: only for the device that is re-provisioned, and
    # only with --replace-identity, since the registry knows it as provisioned
    Step("provision archive", ("berlin-02", "-i", "lab", "--out", "{root}/archives",
                               "--replace-identity")),
    Step("provision all", ("-i", "lab", "--limit", "berlin-02", "--out", "{root}/archives",
                           "--replace-identity")),
    Step("provision verify", ("{root}/archives/edgefleet-berlin-02.zip",), listing=False),
    Step("lab reset", ("berlin-02",), listing=False),
    Step("provision usb", ("berlin-02", "-i", "lab", "--mount", "{root}/usb", "--force"),
         listing=False),
    Step("lab usb", ("berlin-02", "{root}/usb"), listing=False),
    Step("provision wipe", ("--mount", "{root}/usb", "--force")),
    Step("ca revoke", ("berlin-02",), listing=False),
    Step("devices deregister", ("berlin-02",), listing=False),
    Step("serve user add", ("ops", "--role", "operator"), listing=False, stdin="correct horse 42\n"),
    Step("serve user list"),
    # a playbook with the project's own operation (written by the fixture); run streams events
    Step("play run", ("{root}/playbooks/json.yaml", "-i", "lab"), stream=True),
    Step("play status"),
)


def json_commands() -> set[str]:
    """Every `fleet` command path that takes --json, read from the app itself."""
    found: set[str] = set()

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), (*path, name))
        elif any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.add(" ".join(path))

    walk(typer.main.get_command(app), ())
    return found


# Commands whose --json answer a test of their own parses, because they need what this
# scenario's lab cannot give (a Debian root and a wheelhouse; a box in the field with a
# password login): the command, the test file that runs it with --json, and the words
# of its invocation there.
ELSEWHERE = {
    "device package": ("fixtures_device.py", '"device", "package"'),
    "device bootstrap": ("test_device_bootstrap.py", '"device", "bootstrap"'),
    # needs a run killed mid-play (kill -9) to have something to resume
    "play resume": ("play/test_play_resume.py", '"play", "resume"'),
    # needs a play run that is still open (its journal written by the test itself)
    "play abort": ("play/test_play_abort.py", '"play", "abort"'),
    # a deploy needs a running application with a camera on each device (the RTSP server)
    **{f"app {verb}": ("appdeploy/test_app_cli_lab.py", f'cli(lab, "{verb}"')
       for verb in ("plan", "deploy", "status", "resume", "abort", "retry", "rollback",
                    "remove")},
}


def test_every_json_command_is_in_the_scenario() -> None:
    covered = {step.command for step in SCENARIO}
    for command, (name, invocation) in ELSEWHERE.items():
        text = (Path(__file__).parent / name).read_text()
        assert invocation in text and '"--json"' in text, f"{name} no longer runs fleet {command} --json"
        covered.add(command)
    missing = sorted(json_commands() - covered)
    assert not missing, f"add these commands to SCENARIO in {__file__}: {missing}"
    assert not covered - json_commands(), "SCENARIO names a command without --json"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    shutil.copytree(REPO / "firmware", tmp_path / "firmware")
    (tmp_path / "cameras.csv").write_text(CAMERAS)
    (tmp_path / "usb").mkdir()
    write_app(tmp_path / "panorama", "tracker")  # a panorama-cli project, as AWS's samples
    (tmp_path / "playbooks" / "operations").mkdir(parents=True)
    (tmp_path / "playbooks" / "operations" / "ops.py").write_text(PLAY_OP)
    (tmp_path / "playbooks" / "json.yaml").write_text(
        "- name: greet\n  hosts: all\n  tasks:\n    - name: hi\n      json.hello: {}\n")
    yield tmp_path
    Lab(Project.locate(tmp_path)).down()


def problem(step: Step, exit_code: int, stdout: str, stderr: str) -> str | None:
    """What is wrong with one command's answer, or None."""
    if exit_code not in step.exits:
        return f"exit {exit_code} (expected {step.exits}): {stderr.strip()[-300:]}"
    try:
        docs = [json.loads(line) for line in stdout.splitlines()] if step.stream else [json.loads(stdout)]
    except json.JSONDecodeError as exc:
        return f"stdout is not {'JSON lines' if step.stream else 'one JSON document'} ({exc}): {stdout[:200]!r}"
    if not docs or not all(isinstance(d, dict) for d in docs):
        return "stdout holds something other than JSON objects"
    doc = docs[-1]
    if step.stream and not isinstance(doc.get("report"), dict):
        return f"the last line is not {{\"report\": {{...}}}}: {doc}"
    if not isinstance(doc, dict):
        return f"stdout is JSON but not an object: {type(doc).__name__}"
    if step.listing and not any(isinstance(v, (list, dict)) for v in doc.values()):
        return f"a listing without a named list or object: keys {sorted(doc)}"
    return None


def test_json_output_of_every_command(root: Path) -> None:
    values = {"root": str(root), "ssh": default_ssh_kind()}
    problems = []
    for step in SCENARIO:
        args = [a.format(**values) for a in step.args]
        result = run_cli(root, *step.command.split(), *args, "--json", env=ENV, stdin=step.stdin)
        why = problem(step, result.exit_code, result.stdout, result.stderr)
        if why:
            problems.append(f"fleet {step.command} {' '.join(args)} --json: {why}")
    assert not problems, "\n".join(problems)
