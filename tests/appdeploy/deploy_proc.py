"""A controller process for the kill tests: `start` or `resume` a deploy of the colour app.

    python deploy_proc.py PROJECT CAMERA start BUNDLE
    python deploy_proc.py PROJECT CAMERA resume

Registers the ``app`` kind with the test's camera binding (what A2's configure does from
the registry), so `resume` rebuilds the same work from the journal. Prints one JSON line
per progress callback (flushed), so the test can kill it at a chosen step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent),
                str(Path(__file__).resolve().parents[1] / "rollout"),
                str(Path(__file__).resolve().parents[1])]

from appdeploy_kit import HEALTH, Camera  # noqa: E402

from fleet import inventory as inv  # noqa: E402
from fleet.apps.work import AppWork  # noqa: E402
from fleet.project import Project  # noqa: E402
from fleet.rollout import engine  # noqa: E402
from fleet.rollout.policy import Policy  # noqa: E402
from fleet.rollout.settings import nornir_for  # noqa: E402
from fleet.rollout.work import Progress, register  # noqa: E402

CAMERA = sys.argv[2]


def show(device: str, step: str, fields: dict[str, Any]) -> None:
    print(json.dumps({"device": device, "step": step, **fields}), flush=True)


class LabAppWork(AppWork):
    @classmethod
    def from_header(cls, project: Project, header: dict[str, Any],
                    progress: Progress | None = None) -> AppWork:
        return cls.for_bundle(project, Path(str(header["artifact"])),
                              health=dict(header.get("health") or {}),
                              configure=lambda *_: Camera(CAMERA), progress=progress)


def main() -> None:
    project = Project.locate(sys.argv[1])
    register("app", LabAppWork)
    if sys.argv[3] == "start":
        work = AppWork.for_bundle(project, Path(sys.argv[4]), health=HEALTH,
                                  configure=lambda *_: Camera(CAMERA), progress=show)
        policy = Policy(batches=(1, "100%"), concurrency=3, max_fail_percentage=0)
        sel = inv.Selection.of("lab")
        report = engine.start(project, inv.select(project, sel, num_workers=3), work, policy,
                              selection={"inventory": "lab"})
    else:
        header = engine.status(project, None).header
        report = engine.resume(project, None, nornir_for(project, header),
                               LabAppWork.from_header(project, header, show))
    print(json.dumps({"report": report.to_dict()}), flush=True)


if __name__ == "__main__":
    main()
