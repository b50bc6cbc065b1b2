"""What a code node needs from this machine, found before the first frame.

Reads the application, never runs it: the ``requirements.txt`` beside the code
(or its package), the imports of the entry module and of the sibling modules it
imports (parsed with ``ast``; a name counts as present when ``importlib`` can
find it, which does not import it), and the places the code binds tensors to
CUDA itself. Imports guarded by ``try: ... except ImportError`` are optional and
not reported.

>>> errors, warnings = check(load_application(Path("app")), cuda=False)  # doctest: +SKIP
>>> print(errors[0])                                                    # doctest: +SKIP
packages/.../src/app.py: line 3: imports tensorflow, which is not installed here: ...
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from fleet_runtime.manifest import Application, CodeNode, Problem

# pip name -> the module that provides it (when they differ, or one wheel stands for another)
PROVIDES = {
    "opencv-python": "cv2",
    "opencv-python-headless": "cv2",
    "opencv-contrib-python": "cv2",
    "opencv-contrib-python-headless": "cv2",
    "onnxruntime-gpu": "onnxruntime",
    "pillow": "PIL",
    "scikit-image": "skimage",
    "scikit-learn": "sklearn",
    "pyyaml": "yaml",
    "tensorflow-gpu": "tensorflow",
    "paho-mqtt": "paho",
    "pygobject": "gi",
}
PIP_NAME = {"cv2": "opencv-python-headless", "PIL": "pillow", "sklearn": "scikit-learn",
            "skimage": "scikit-image", "yaml": "pyyaml", "paho": "paho-mqtt", "gi": "PyGObject"}
SDK = {"panoramasdk"}
_CUDA_CALLS = {"ortvalue_from_numpy", "ortvalue_from_shape_and_type", "bind_input", "bind_output"}
_GPU_ONLY = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}


def check(app: Application, cuda: bool) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for every code node; ``cuda``: whether CUDA works here."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for node in app.code_nodes:
        errors.extend(_requirements(app, node))
        modules = list(_modules(node))
        errors.extend(_imports(app, node, modules))
        cuda_errors, cuda_warnings = _cuda(app, node, modules)
        if not cuda:
            errors.extend(cuda_errors)
            warnings.extend(cuda_warnings)
            if node.needs_gpu:
                warnings.append(_gpu_declared(app, node))
    return errors, warnings


def _rel(app: Application, path: Path) -> str:
    try:
        return str(path.relative_to(app.root))
    except ValueError:
        return str(path)


# ---- requirements.txt -----------------------------------------------------------------

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _requirements(app: Application, node: CodeNode) -> list[Problem]:
    found = []
    for folder in dict.fromkeys(p for p in (node.code_root, node.package_dir) if p):
        path = folder / "requirements.txt"
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            match = _REQUIREMENT.match(text) if text and not text.startswith("-") else None
            if match and not installed(match.group(1)):
                found.append(
                    Problem(
                        _rel(app, path),
                        f"line {number}",
                        f"{node.name} requires {text}, which is not installed here:"
                        f" pip install '{text}' on the device, or build the app without it",
                    )
                )
    return found


def installed(requirement: str) -> bool:
    """Whether the distribution ``requirement`` (a pip name) or what it provides is present."""
    name = requirement.lower().replace("_", "-")
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    module = PROVIDES.get(name, name.replace("-", "_").replace(".", "_"))
    return importlib.util.find_spec(module) is not None


# ---- imports --------------------------------------------------------------------------


def _modules(node: CodeNode) -> Iterator[tuple[Path, ast.Module]]:
    """The entry module and every sibling module it reaches, parsed."""
    todo, seen = [node.entry], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_text(errors="replace"), str(path))
        except SyntaxError:
            continue  # the node's own start reports it, with the line
        yield path, tree
        for name, _ in _imported(tree):
            sibling = _sibling(node.code_root, name)
            if sibling is not None:
                todo.append(sibling)


def _sibling(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.py", root / name / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Top-level module names imported unconditionally (not inside try/except ImportError)."""
    optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and _guards(t)
                for n in ast.walk(t)}
    for item in ast.walk(tree):
        if id(item) in optional:
            continue
        if isinstance(item, ast.Import):
            for alias in item.names:
                yield alias.name.split(".")[0], item.lineno
        elif isinstance(item, ast.ImportFrom) and item.module and not item.level:
            yield item.module.split(".")[0], item.lineno


def _guards(node: ast.Try) -> bool:
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for kind in kinds:
            if kind is None or (isinstance(kind, ast.Name) and kind.id in (
                "ImportError", "ModuleNotFoundError", "Exception", "BaseException"
            )):
                return True
    return False


def _imports(
    app: Application, node: CodeNode, modules: list[tuple[Path, ast.Module]]
) -> list[Problem]:
    found, reported = [], set()
    for path, tree in modules:
        for name, line in _imported(tree):
            if name in reported or _available(node, name):
                continue
            reported.add(name)
            pip = PIP_NAME.get(name, name)
            found.append(
                Problem(
                    _rel(app, path),
                    f"line {line}",
                    f"{node.name} imports {name}, which is not installed here: pip install"
                    f" {pip} on the device, or move that model to ONNX and call a model node",
                )
            )
    return found


def _available(node: CodeNode, name: str) -> bool:
    if name in SDK or name in sys.builtin_module_names or name in sys.stdlib_module_names:
        return True
    if _sibling(node.code_root, name) is not None:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---- CUDA -----------------------------------------------------------------------------


def _cuda(
    app: Application, node: CodeNode, modules: list[tuple[Path, ast.Module]]
) -> tuple[list[Problem], list[Problem]]:
    errors, warnings = [], []
    for path, tree in modules:
        for item in ast.walk(tree):
            if isinstance(item, ast.Call) and _binds_cuda(item):
                errors.append(Problem(
                    _rel(app, path), f"line {item.lineno}",
                    f"{node.name} puts tensors on CUDA itself ({_callee(item)}(..., 'cuda')),"
                    " and this machine has no CUDA: run it on a GPU device, or use 'cpu'",
                ))
            elif isinstance(item, ast.List) and _gpu_only(item):
                warnings.append(Problem(
                    _rel(app, path), f"line {item.lineno}",
                    f"{node.name} asks for a GPU execution provider only; this machine has no"
                    " CUDA, so ONNX Runtime will run it on CPU",
                ))
    return errors, warnings


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "call")


def _is_cuda(value: ast.expr) -> bool:
    return isinstance(value, ast.Constant) and isinstance(value.value, str) and (
        value.value.lower().startswith("cuda")
    )


def _binds_cuda(call: ast.Call) -> bool:
    name = _callee(call)
    if name == "cuda" and isinstance(call.func, ast.Attribute):  # torch: tensor.cuda()
        return True
    if name == "device" and call.args and _is_cuda(call.args[0]):  # torch.device("cuda")
        return True
    if name not in _CUDA_CALLS:
        return False
    values = [*call.args, *(k.value for k in call.keywords if k.arg == "device_type")]
    return any(_is_cuda(v) for v in values)


def _gpu_only(items: ast.List) -> bool:
    names = {e.value for e in items.elts if isinstance(e, ast.Constant)}
    return bool(names & _GPU_ONLY) and "CPUExecutionProvider" not in names


def _gpu_declared(app: Application, node: CodeNode) -> Problem:
    where = node.package_dir / "package.json" if node.package_dir else node.entry
    return Problem(
        _rel(app, where),
        "$.nodePackage.assets",
        f"{node.name} asks for GPU access (inferenceAccelerators) and this machine has no CUDA:"
        " model nodes run on CPU; code that uses the GPU itself will not",
    )
