"""The README's commands run, in order, as written.

Every ```sh block of README.md is cut into commands (a line, with its `\\`
continuations) and the lot runs as one bash script in a scratch copy of the
project template, so exports and the lab carry from block to block exactly as
they do for a person pasting them. Each command must exit 0, or the N of a
comment that ends in `exits N`. A block preceded by a line starting with
`<!-- not run by tests/test_readme.py` is skipped (the `make` commands: the
whole setup and the whole suite).

The self-checks at the bottom prove the runner fails on a broken command.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from labkit import HAVE_SSHD

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP_MARK = "<!-- not run by tests/test_readme.py"
EXPECT = re.compile(r"#.*\bexits (\d+)\s*$")
# What a fresh clone holds that the tour uses: the template, and the examples without models.
TEMPLATE = ("firmware", "inventories/example", "runtime/examples", "playbooks")
FAILED = 97  # the script's own exit code for "a command did not exit as the README says"


@dataclass
class Command:
    line: int  # in README.md, 1-based
    text: str
    expect: int


def commands(markdown: str) -> list[Command]:
    """Every command of every runnable ```sh block, in order."""
    found: list[Command] = []
    lines = markdown.splitlines()
    inside, skip, previous = False, False, ""
    pending: list[str] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        if not inside:
            if line.strip() == "```sh":
                inside, skip = True, previous.startswith(SKIP_MARK)
            elif line.strip():
                previous = line.strip()
            continue
        if line.strip() == "```":
            inside, previous = False, ""
            continue
        if skip or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        start = start if pending else number
        pending.append(line)
        if not line.rstrip().endswith("\\"):
            expect = EXPECT.search(line)
            found.append(Command(start, "\n".join(pending), int(expect.group(1)) if expect else 0))
            pending = []
    return found


def script(cmds: list[Command]) -> str:
    """One bash script: each command, then a check of its exit status against the README."""
    out = ["set -o pipefail"]
    for cmd in cmds:
        shown = cmd.text.replace("'", "'\\''")
        out.append(f"printf '%s\\n' '+ README.md:{cmd.line}: {shown}' >&2")
        out.append(cmd.text)
        out.append(f"rc=$?; if [ $rc -ne {cmd.expect} ]; then echo \"README.md:{cmd.line}: "
                   f"exited $rc, the README says {cmd.expect}\" >&2; exit {FAILED}; fi")
    return "\n".join(out) + "\n"


def run_script(text: str, cwd: Path, env: dict[str, str],
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run in its own process group, so what the README puts in the background dies with it."""
    proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", text], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0] + f"\nthe tour did not finish in {timeout:g}s\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def scratch_project(target: Path) -> Path:
    """What a fresh clone has: the template parts, no model files, .venv beside it."""
    for part in TEMPLATE:
        ignore = shutil.ignore_patterns("*.onnx") if part.startswith("runtime/") else None
        shutil.copytree(ROOT / part, target / part, ignore=ignore)
    (target / ".venv").symlink_to(Path(sys.prefix))
    return target


def clean_env(project: Path) -> dict[str, str]:
    """The caller's environment without fleet settings, the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLEET_", "LAB_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    return env


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    if not HAVE_SSHD or not shutil.which("jq") or not shutil.which("curl"):
        if os.environ.get("CI"):
            pytest.fail("CI must have sshd, jq and curl (scripts/system-deps.sh installs them)")
        pytest.skip("needs sshd, jq and curl (scripts/system-deps.sh installs them as root)")
    cmds = commands(README.read_text(encoding="utf-8"))
    project = scratch_project(tmp_path / "clone")
    env = clean_env(project)
    try:
        result = run_script(script(cmds), project, env)
    finally:
        subprocess.run([str(Path(sys.prefix) / "bin/fleet"), "--project", str(project), "lab",
                        "down"], env=env, capture_output=True, check=False, timeout=300)
    tail = "\n".join(result.stdout.splitlines()[-40:])
    assert result.returncode == 0, f"the README tour broke:\n{tail}"


def test_the_readme_links_only_to_files_in_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    assert "../" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), f"README links to {target}, which is not in the repo"


def test_the_tour_is_what_the_parser_sees() -> None:
    cmds = commands(README.read_text(encoding="utf-8"))
    texts = [c.text for c in cmds]
    assert not any(t.startswith("make ") for t in texts)  # the skipped block
    assert texts[0] == ". .venv/bin/activate                             # created by make demo, make test or make setup"
    assert any(c.expect == 2 and "jq .summary" in c.text for c in cmds)
    assert any("\\\n" in t for t in texts)  # continuations stay one command


# ---- self-checks: the runner fails when a README command is broken -----------------

SAMPLE = """
Intro.

<!-- not run by tests/test_readme.py: nothing here may run -->
```sh
exit 5
```

```sh
export GREETING=hello        # carries to the next block
test "$(echo 1)" = 1
```

```sh
[ "$GREETING" = hello ]
sh -c 'exit 3'               # fails on purpose; exits 3
printf 'a\\n' | \\
    grep -q a
{broken}
echo never
```
"""


def _run_sample(tmp_path: Path, broken: str) -> subprocess.CompletedProcess[str]:
    cmds = commands(SAMPLE.format(broken=broken))
    return run_script(script(cmds), tmp_path, {"PATH": os.environ.get("PATH", "")}, timeout=120)


def test_self_check_a_sound_readme_passes(tmp_path: Path) -> None:
    result = _run_sample(tmp_path, "true")
    assert result.returncode == 0, result.stdout
    assert "never" in result.stdout


def test_self_check_a_broken_command_fails_and_is_named(tmp_path: Path) -> None:
    result = _run_sample(tmp_path, "fleet-no-such-command --json")
    assert result.returncode == FAILED
    assert "README.md:19: exited 127, the README says 0" in result.stdout
    assert "never" not in result.stdout  # the first broken command stops the tour


def test_self_check_a_failure_hidden_in_a_pipe_fails(tmp_path: Path) -> None:
    result = _run_sample(tmp_path, "false | cat")
    assert result.returncode == FAILED and "exited 1, the README says 0" in result.stdout


def test_self_check_a_command_that_should_fail_but_passes_fails(tmp_path: Path) -> None:
    result = _run_sample(tmp_path, "true   # exits 2")
    assert result.returncode == FAILED and "exited 0, the README says 2" in result.stdout
