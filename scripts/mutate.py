"""`make mutate`: mutation testing of the guard modules with cosmic-ray.

Each target pairs one guard module (optionally only some of its functions)
with the fast tests that should notice when it breaks. cosmic-ray changes the
module one mutation at a time and runs those tests; a mutant the tests still
pass on "survived", and is either a missing test or an equivalent change
(docs/promises.md lists which).

cosmic-ray edits files in place, so every run works in a scratch copy of the
tree (`git ls-files`), imported ahead of the editable install through
PYTHONPATH: the checkout is never touched. Only the controller side and
in-process device code can be mutated this way; a lab device's `fleet-agent`
runs from the installed tree, so targets list in-process tests only.

    .venv/bin/python scripts/mutate.py                 # every target
    .venv/bin/python scripts/mutate.py bundle secrets  # some targets
    .venv/bin/python scripts/mutate.py --list

Sessions and the report are kept under `.mutate/` (git-ignored); a second run
of the same target resumes its session (delete `.mutate/` to start over).
Runs one mutant at a time on purpose: the machines are shared.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".mutate"
PYTEST = "-m pytest -x -q -p no:cacheprovider -p no:randomly"


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # empty: the whole module
    timeout: float = 120.0


REGISTRY_TESTS = ("tests/registry/test_sqlite.py", "tests/registry/test_sqlite_guards.py",
                  "tests/test_cameras.py", "tests/test_secrets.py")

TARGETS = (
    Target("bundle", "runtime/fleet_runtime/bundle.py",
           ("tests/runtime/test_bundle.py", "tests/runtime/test_bundle_guards.py"),
           ("parse_version", "compare_versions", "load_public_key", "verify", "safe_path",
            "_require", "_str_list", "_file_entry", "_hooks", "parse_manifest", "check_compatible",
            "_known", "_check_permit", "_next", "_read_small", "_read_exact", "_header",
            "read_manifest", "_member_entry", "_copy_member", "read_bundle", "begin", "write",
            "end")),
    Target("secrets", "fleet/secrets.py", ("tests/test_secrets.py", "tests/test_secrets_guards.py")),
    Target("transport-host-keys", "fleet/transport.py",
           ("tests/test_transport_host_keys.py", "tests/test_transport.py", "-k",
            "host_key or exec_runs or known_hosts or unpin or pinned"),
           ("fingerprint", "known_hosts_name", "pin_host_key", "pin_host_keys",
            "unpin_host_key", "_verify_host_key"), timeout=240.0),
    Target("slots", "runtime/fleet_runtime/slots.py", ("tests/runtime/test_slots.py",),
           ("_begin_install", "_check_space", "_transition", "_persist", "read_state", "_upgrade"),
           timeout=240.0),
    Target("rollout-accept", "fleet/rollout/update.py", ("tests/rollout/test_accept.py",),
           ("accept",)),
    # settle and full_gate ask a device: only the lab tests reach them (minutes a mutant)
    Target("rollout-settle", "fleet/rollout/update.py",
           ("tests/rollout/test_rollout_resume.py", "tests/rollout/test_rollout_lab.py"),
           ("settle", "full_gate"), timeout=900.0),
    Target("ota-verify", "fleet/ota.py", ("tests/test_ota.py",),
           ("read_target", "target_version", "_check", "_verify", "_commit", "_recover"),
           timeout=600.0),
    Target("registry-db", "fleet/registry/sqlite_db.py", REGISTRY_TESTS, ("transaction",),
           timeout=240.0),
    Target("registry-cameras", "fleet/registry/sqlite_cameras.py", REGISTRY_TESTS,
           ("write", "write_rows", "seal_passwords", "rotate_secret_key", "_reseal", "remove",
            "delete"), timeout=240.0),
    Target("registry-devices", "fleet/registry/sqlite_devices.py", REGISTRY_TESTS,
           ("deregister",), timeout=240.0),
    Target("provisioning", "runtime/fleet_runtime/provisioning.py",
           ("tests/test_provisioning.py", "-k", "not usb and not lab"),
           ("verify_archive", "read_archive", "_read_all", "_read_member", "_check_entry",
            "_allowed", "_check_signed", "_check_hashes", "_check_identity", "_check_key_pair",
            "_check_expectations", "verify_bytes", "trusted_fingerprints"), timeout=300.0),
)


def function_lines(source: Path, names: tuple[str, ...]) -> list[range]:
    """Line ranges of the named functions (methods too), decorators included."""
    tree = ast.parse(source.read_text())
    found: dict[str, range] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found[node.name] = range(first, (node.end_lineno or node.lineno) + 1)
    missing = sorted(set(names) - set(found))
    if missing:
        sys.exit(f"error: {source}: no function named {', '.join(missing)}; "
                 "fix TARGETS in scripts/mutate.py")
    return list(found.values())


def scratch_copy(dest: Path) -> None:
    """Copy the tracked and untracked-but-not-ignored files of the checkout."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(".mutate/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def write_config(target: Target, work: Path) -> Path:
    test_command = " ".join([sys.executable, PYTEST, *(_quote(t) for t in target.tests)])
    config = work / f"{target.name}.toml"
    config.write_text("[cosmic-ray]\n"
                      f'module-path = "{target.module}"\n'
                      f"timeout = {target.timeout}\n"
                      "excluded-modules = []\n"
                      f"test-command = '''{test_command}'''\n"
                      '\n[cosmic-ray.distributor]\nname = "local"\n')
    return config


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


def cosmic(*args: str, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run([str(Path(sys.executable).parent / "cosmic-ray"), *args], cwd=cwd, env=env,
                   check=True)


def annotation_spans(source: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where annotations are: never evaluated under `from __future__ import annotations`."""
    spans: list[tuple[tuple[int, int], tuple[int, int]]] = []
    for node in ast.walk(ast.parse(source.read_text())):
        notes: list[ast.expr | None] = []
        if isinstance(node, ast.arg):
            notes.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            notes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            notes.append(node.annotation)
        spans.extend(((n.lineno, n.col_offset), (n.end_lineno or n.lineno, n.end_col_offset or 0))
                     for n in notes if n is not None)
    return spans


def equivalent(mutation: object, lines: list[str],
               spans: list[tuple[tuple[int, int], tuple[int, int]]]) -> str | None:
    """Why a mutant cannot change behaviour, for the two kinds known by rule."""
    line, col = mutation.start_pos  # type: ignore[attr-defined]
    if any(a <= (line, col) < b for a, b in spans):
        return "in an annotation (not evaluated: from __future__ import annotations)"
    text = lines[line - 1][col:]
    name = mutation.operator_name  # type: ignore[attr-defined]
    if "BinaryOperator_Mul_" in name and text[:1] == "*" and text[1:].lstrip()[:1] == ",":
        return "the bare * of keyword-only parameters (every caller passes them by name)"
    return None


def prefilter(db_path: Path, target: Target, work: Path) -> None:
    """Skip mutants outside the target's functions and those equivalent by rule."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    source = work / target.module
    ranges = function_lines(source, target.functions) if target.functions else None
    spans, lines = annotation_spans(source), source.read_text().splitlines()
    with use_db(str(db_path), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            mutation = item.mutations[0]
            why: str | None
            if ranges is not None and not any(mutation.start_pos[0] in r for r in ranges):
                why = "outside the guard functions"
            else:
                why = equivalent(mutation, lines, spans)
            if why:
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                      output=why))


def forget_survivors(db_path: Path) -> None:
    """Make survivors pending again, so `exec` runs them against today's tests."""
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")


def run_target(target: Target, work: Path, *, rerun_survivors: bool = False) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(work), str(work / "runtime"), str(work / "tests")])}
    db = STATE / f"{target.name}.sqlite"
    config = write_config(target, work)
    if not db.exists():
        cosmic("init", str(config), str(db), cwd=work, env=env)
        prefilter(db, target, work)
    elif rerun_survivors:
        forget_survivors(db)
    print(f"== {target.name}: {target.module} <- {' '.join(target.tests)}", flush=True)
    cosmic("baseline", str(config), cwd=work, env=env)
    cosmic("exec", str(config), str(db), cwd=work, env=env)


def summarize(target: Target) -> tuple[int, int, int, list[str]]:
    """(killed, counted, equivalent by rule, survivor lines) of a finished session."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    killed = counted = equivalents = 0
    survivors: list[str] = []
    with use_db(str(STATE / f"{target.name}.sqlite"), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                equivalents += (result.output or "").startswith(("in an", "the bare"))
                continue
            counted += 1
            if result.test_outcome == TestOutcome.SURVIVED:
                survivors.append(_describe(item, result.diff or ""))
            else:
                killed += 1
    return killed, counted, equivalents, survivors


def _describe(item: object, diff: str) -> str:
    mutation = item.mutations[0]  # type: ignore[attr-defined]
    changed = [line for line in diff.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return (f"{mutation.module_path}:{mutation.start_pos[0]} {mutation.operator_name}\n"
            + "".join(f"      {line}\n" for line in changed))


def report(targets: list[Target]) -> str:
    lines, total_killed, total = [], 0, 0
    for target in targets:
        if not (STATE / f"{target.name}.sqlite").exists():
            continue
        killed, counted, equivalents, survivors = summarize(target)
        total_killed, total = total_killed + killed, total + counted
        score = 100.0 * killed / counted if counted else 100.0
        lines.append(f"{target.name:22} {killed:4}/{counted:<4} killed  {score:5.1f}%"
                     f"  ({equivalents} equivalent by rule, not counted)")
        lines.extend(f"    survived: {s}" for s in survivors)
    score = 100.0 * total_killed / total if total else 100.0
    lines.append(f"mutation score: {total_killed}/{total} killed = {score:.1f}%")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="target names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--report", action="store_true", help="only print the last results")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="run the last session's survivors again (after adding tests)")
    args = parser.parse_args()
    by_name = {t.name: t for t in TARGETS}
    unknown = [n for n in args.targets if n not in by_name]
    if unknown:
        print(f"error: unknown target {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    chosen = [by_name[n] for n in args.targets] or list(TARGETS)
    if args.list:
        for t in TARGETS:
            print(f"{t.name:22} {t.module} {' '.join(t.functions)} <- {' '.join(t.tests)}")
        return 0
    STATE.mkdir(exist_ok=True)
    if not args.report:
        work = STATE / "tree"
        shutil.rmtree(work, ignore_errors=True)
        scratch_copy(work)
        for target in chosen:
            run_target(target, work, rerun_survivors=args.rerun_survivors)
    text = report(chosen)
    (STATE / "report.txt").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
