"""Package layouts Panorama's own tooling produced, beyond the one ``package.json`` shape.

* ``requirements`` (GPU access) inside ``implementations[]`` as well as on the asset;
* a code descriptor whose entry is a shell script that starts Python
  (``"path": "bash", "name": "/panorama/setup.sh"``): the script is read, not run,
  and its ``python3 /panorama/<file>.py`` line is the entry (other lines are reported);
* a ``panorama-cli`` project before ``build-container``: ``"assets": []``, the code in the
  folder the package's Dockerfile copies to ``/panorama`` (``src`` by default) and the
  descriptor in ``descriptor.json`` beside ``package.json``;
* camera packages (``"type": "system"``) whose inputs carry ``default`` values.

>>> python_entry("cd /panorama\\npip3 install -r requirements.txt\\nexec python3 -u app.py\\n")
('/panorama/app.py', ['line 2 is not run: pip3 install -r requirements.txt'])
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

SHELLS = ("bash", "/bin/bash", "/usr/bin/bash", "sh", "/bin/sh", "/usr/bin/sh")
_PYTHON = re.compile(r"^(/usr(/local)?/bin/)?python(3(\.\d+)?)?\Z")
_HARMLESS = {"set", "export", "echo", "true", ":", "source", "."}
_COPY = re.compile(r"^\s*(?:COPY|ADD)\s+(?:--\S+\s+)*(\S+)\s+/panorama/?\s*\Z", re.IGNORECASE)


def is_shell(path: str) -> bool:
    return path in SHELLS


def python_entry(script: str) -> tuple[str | None, list[str]]:
    """The ``/panorama/*.py`` a launch script starts, and the lines it would also run."""
    cwd, entry, skipped = "/panorama", None, []
    for number, line in enumerate(script.splitlines(), 1):
        text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#!") else ""
        for command in re.split(r"&&|;|\|\|", text):
            words = _words(command)
            if not words:
                continue
            if words[0] == "cd" and len(words) > 1:
                cwd = words[1] if words[1].startswith("/") else f"{cwd}/{words[1]}"
            elif _PYTHON.match(words[0]) and entry is None:
                entry = _script_of(words[1:], cwd)
            elif words[0] not in _HARMLESS:
                skipped.append(f"line {number} is not run: {command.strip()}")
    return entry, skipped


def _words(command: str) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    while words and (words[0] in ("exec", "env", "nohup") or "=" in words[0]):
        words = words[1:]  # exec python3 ..., PYTHONPATH=x python3 ...
    return words


def _script_of(args: list[str], cwd: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == "-m" and index + 1 < len(args):
            return f"{cwd}/{args[index + 1].replace('.', '/')}.py"
        if arg.endswith(".py"):
            return arg if arg.startswith("/") else f"{cwd}/{arg}"
    return None


def needs_gpu(asset: dict[str, Any], implementation: dict[str, Any]) -> bool:
    """Whether the asset asks for GPU access (``inferenceAccelerators``) at either level."""
    requirements = [*asset.get("requirements", []), *implementation.get("requirements", [])]
    return any(r.get("inferenceAccelerators") for r in requirements)


def cli_asset(package_dir: Path, category: str) -> dict[str, Any] | None:
    """The asset ``panorama-cli build-container`` would declare for a package without one."""
    descriptor = package_dir / "descriptor.json"
    if not descriptor.is_file():
        return None
    if category == "business_logic":
        folder = _docker_source(package_dir / "Dockerfile") or "src"
        kind = "container"
    else:
        folder = "model" if (package_dir / "model").is_dir() else "."
        kind = "model"
    if not (package_dir / folder).is_dir():
        return None
    return {"type": kind, "assetUri": folder, "descriptorUri": "descriptor.json"}


def _docker_source(dockerfile: Path) -> str | None:
    """The folder a panorama-cli Dockerfile copies to /panorama (``COPY src /panorama``)."""
    if not dockerfile.is_file():
        return None
    for line in dockerfile.read_text(errors="replace").splitlines():
        match = _COPY.match(line)
        if match:
            return match.group(1).rstrip("/")
    return None


def camera_defaults(ports: list[dict[str, Any]]) -> dict[str, str]:
    """``url``, ``username``, ``password`` from a camera interface's input defaults."""
    found: dict[str, str] = {}
    for port in ports:
        name, value = port["name"].lower(), port.get("default")
        if not isinstance(value, str) or not value:
            continue
        if "url" in name or "uri" in name:
            found["url"] = value
        elif "user" in name:
            found["username"] = value
        elif "pass" in name:
            found["password"] = value
    return found
