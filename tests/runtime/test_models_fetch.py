"""`fleet-runtime models fetch APP` makes the examples validate from a fresh clone, and the
"model file not found" error names that command and the folder the file belongs in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fleet_runtime.runtime_cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "runtime" / "examples"


def _clone(name: str, tmp_path: Path) -> Path:
    """The example as a fresh clone has it: no model files."""
    return Path(shutil.copytree(EXAMPLES / name, tmp_path / name,
                                ignore=shutil.ignore_patterns("*.onnx")))


@pytest.mark.parametrize(("name", "model"), [
    ("face_blur", "packages/123456789012-CENTERFACE-1.0/model/centerface.onnx"),
    ("color_classifier", "packages/123456789012-COLOR_MODEL-1.0/model/color.onnx"),
])
def test_models_fetch_then_validate(name: str, model: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    app = _clone(name, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", name]) == 1
    said = capsys.readouterr().out
    assert f"model file not found: {model};" in said
    assert f"fetch or build it with `fleet-runtime models fetch {name}`" in said
    assert main(["models", "fetch", name]) == 0
    assert (app / model).is_file() and f"{name}/{model}: " in capsys.readouterr().out
    assert main(["validate", name]) == 0
    assert main(["models", "fetch", name]) == 0  # again: nothing to do
    assert "already in place" in capsys.readouterr().out


def test_a_model_with_no_known_source_is_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    app = _clone("color_classifier", tmp_path)
    (app / "build_model.py").unlink()
    assert main(["models", "fetch", str(app)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no known source for packages/123456789012-COLOR_MODEL-1.0/model/color.onnx" in err


def test_not_an_application(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "fetch", str(tmp_path)]) == 1
    assert "is not an application directory" in capsys.readouterr().err
