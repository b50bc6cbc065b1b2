"""The JSON API under /api/: the CLI's --json shapes, the same users (Bearer token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from fleet.console import rollouts as ro
from fleet.console.app import Forbidden, api_user, render, state_of
from fleet.console.remote import describe_error
from fleet.console.users import User
from fleet.errors import FleetError
from fleet.health import summarize
from fleet.rollout.journal import Journal

router = APIRouter(prefix="/api", tags=["fleet"])
ApiUser = Annotated[User, Depends(api_user)]


@router.get("/devices", summary="Registered devices (`fleet devices list --json`)")
def devices(request: Request, user: ApiUser, site: str = "", status: str = ""
            ) -> dict[str, Any]:
    found = state_of(request).index.devices()
    return {"devices": [d for d in found if (not site or d.get("site") == site)
                        and (not status or status in (d.get("status"), d.get("connection"),
                                                      d.get("provisioning")))]}


@router.get("/devices/{name}", summary="One device and its history (`fleet devices show --json`)")
def device(request: Request, name: str, user: ApiUser) -> dict[str, Any]:
    with state_of(request).registry() as registry:
        record = registry.get_device(name)
        history = registry.history(name, limit=20) if record else []
    if record is None:
        raise HTTPException(404, f"device '{name}' is not registered")
    return {"device": record, "history": history}


@router.get("/cameras", summary="Registered cameras, never with a password field")
def cameras(request: Request, user: ApiUser, device: str = "") -> dict[str, Any]:
    return {"cameras": state_of(request).cameras(devices=[device] if device else [])}


@router.get("/health", summary="Latest health per device (`fleet health --json`)")
def health(request: Request, user: ApiUser) -> dict[str, Any]:
    state = state_of(request)
    latest = [r for n in sorted(state.board.summary()) if (r := state.board.latest(n))]
    reports = [r.health for r in latest]
    return {"devices": [r.as_json() for r in reports], "summary": summarize(reports),
            "source": state.settings.health_source, "time": state.board.last_sweep}


@router.get("/rollouts", summary="Rollouts, newest first (each as `fleet ota status --json`)")
def rollouts(request: Request, user: ApiUser) -> dict[str, Any]:
    return {"rollouts": [r.to_dict() for r in ro.list_reports(state_of(request).project)]}


@router.get("/rollouts/{rollout_id}", summary="One rollout (`fleet ota status ID --json`)")
def rollout(request: Request, rollout_id: str, user: ApiUser
            ) -> dict[str, Any]:
    try:
        return ro.read_report(Journal.open(state_of(request).project, rollout_id)).to_dict()
    except FleetError as exc:
        raise HTTPException(404, describe_error(exc)) from None


@router.post("/rollouts/{rollout_id}/{action}",
             summary="pause | resume | abort | retry (operators only)")
def act(request: Request, rollout_id: str, action: str, user: ApiUser
        ) -> Response:
    if not user.can_act:
        raise Forbidden(f"{user.name} is a viewer: only operators can do that")
    if action not in ro.ACTIONS:
        raise HTTPException(404, f"no action '{action}'")
    try:
        message = ro.act(state_of(request).project, rollout_id, action, user.name)
    except FleetError as exc:
        return JSONResponse({"error": describe_error(exc)}, 409)
    return JSONResponse({"ok": True, "message": message})


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, user: ApiUser) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema


@router.get("/docs", include_in_schema=False)
def docs(request: Request, user: ApiUser) -> Response:
    """The OpenAPI description as a page of our own (the usual one loads scripts from a CDN)."""
    schema = request.app.openapi()
    routes = [(path, method.upper(), op.get("summary", ""))
              for path, ops in schema["paths"].items() for method, op in ops.items()]
    return render(request, "api_docs.html", routes=routes, schema=schema)
