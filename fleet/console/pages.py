"""The console's HTML pages, the live rollout stream (SSE) and the rollout actions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from fleet.console import rollouts as ro
from fleet.console.app import operator, page_session, render, signed_in, state_of
from fleet.console.devices import Query, run_query
from fleet.console.health_board import Reading
from fleet.console.remote import describe_error, export_logs
from fleet.console.security import COOKIE, Session
from fleet.errors import FleetError
from fleet.rollout.journal import Journal
from fleet.rollout.report import TERMINAL

router = APIRouter(include_in_schema=False)
SignedIn = Annotated[Session, Depends(page_session)]
FormText = Annotated[str, Form()]
SSE_POLL_S = 0.2      # how often a live page's journal is looked at
SSE_KEEPALIVE_S = 15.0


@router.get("/")
def overview(request: Request, session: SignedIn) -> Response:
    state = state_of(request)
    table = state.index.table(state.board.summary, state.board.version)
    active = [r for r in ro.list_reports(state.project)
              if r.status not in TERMINAL and r.status != ro.UNREADABLE]
    return render(request, "overview.html", sites=table.sites, total=len(table.rows),
                  versions=table.versions, apps=table.apps, active=active, board=state.board)


@router.get("/devices")
def devices(request: Request, session: SignedIn) -> Response:
    state = state_of(request)
    query = Query.from_params(dict(request.query_params))
    page = run_query(state.index.table(state.board.summary, state.board.version), query)
    fragment = (request.headers.get("hx-request") == "true"
                and request.headers.get("hx-history-restore-request") != "true")
    response = render(request, "devices_table.html" if fragment else "devices.html",
                      page=page, query=query)
    if fragment:  # the address bar gets the view's own URL, without empty filters
        response.headers["HX-Push-Url"] = "/devices?" + urlencode(query.to_params())
    return response


def _device_or_404(request: Request, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with state_of(request).registry() as registry:
        device = registry.get_device(name)
        history = registry.history(name, limit=20) if device else []
    if device is None:
        raise HTTPException(404, f"device '{name}' is not registered")
    return device, history


@router.get("/devices/{name}")
def device(request: Request, name: str, session: SignedIn) -> Response:
    state = state_of(request)
    record, history = _device_or_404(request, name)
    readings = state.board.history(name)
    latest: Reading | None = readings[0] if readings else None
    return render(request, "device.html", device=record, events=history,
                  cameras=state.cameras(devices=[name]), latest=latest, readings=readings,
                  cert=latest.health.check("certificate") if latest else {},
                  slot=latest.health.check("slot") if latest else {})


@router.get("/devices/{name}/cameras/{camera}/snapshot.jpg")
def snapshot(request: Request, name: str, camera: str,
             session: SignedIn) -> Response:
    state = state_of(request)
    if not state.cameras(devices=[name], names=[camera]):
        raise HTTPException(404, f"no camera '{camera}' on device '{name}'")
    try:
        jpeg = state.snapshots.get(name, camera)
    except FleetError as exc:
        return Response(describe_error(exc) + "\n", 502, media_type="text/plain")
    return Response(jpeg, media_type="image/jpeg")


@router.get("/devices/{name}/logs")
def logs(request: Request, name: str, session: SignedIn) -> Response:
    state = state_of(request)
    _device_or_404(request, name)
    try:
        path = export_logs(state.project, name, state.project.state_dir / "console" / "logs")
    except FleetError as exc:
        return render(request, "error.html", 502, title="Log export failed",
                      message=describe_error(exc))
    # the bundle is the browser's now: the copy here goes once it is sent
    return FileResponse(path, media_type="application/gzip", filename=path.name,
                        background=BackgroundTask(path.unlink, missing_ok=True))


@router.get("/cameras")
def cameras(request: Request, session: SignedIn) -> Response:
    return render(request, "cameras.html", cameras=state_of(request).cameras())


@router.get("/rollouts")
def rollouts(request: Request, session: SignedIn) -> Response:
    return render(request, "rollouts.html", reports=ro.list_reports(state_of(request).project))


def _rollout_context(request: Request, rollout_id: str) -> dict[str, Any]:
    try:
        journal = Journal.open(state_of(request).project, rollout_id)
        report = ro.read_report(journal)
    except FleetError as exc:
        raise HTTPException(404, describe_error(exc)) from None
    return {"report": report, "actions": ro.allowed(report, journal.is_running())}


@router.get("/rollouts/{rollout_id}")
def rollout(request: Request, rollout_id: str,
            session: SignedIn) -> Response:
    flash = ro.done_message(request.query_params.get("done", ""), rollout_id)
    return render(request, "rollout.html", flash=flash,
                  **_rollout_context(request, rollout_id))


@router.get("/rollouts/{rollout_id}/events")
async def rollout_events(request: Request, rollout_id: str,
                         session: SignedIn) -> Response:
    """Server-sent events: the rollout's body, re-rendered whenever its journal grows."""
    state = state_of(request)
    _rollout_context(request, rollout_id)  # 404 for an unknown id, before streaming
    template = state.templates.get_template("rollout_body.html")

    async def stream() -> AsyncIterator[str]:
        last: Any = None
        quiet_since = time.monotonic()
        sid = request.cookies.get(COOKIE)
        while not await request.is_disconnected() and signed_in(state, sid) is session:
            stamp = ro.journal_stamp(state.project, rollout_id)
            if stamp != last:
                last, quiet_since = stamp, time.monotonic()
                html = template.render(session=session, **_rollout_context(request, rollout_id))
                yield "event: update\n" + "".join(f"data: {line}\n"
                                                  for line in html.splitlines()) + "\n"
            elif time.monotonic() - quiet_since > SSE_KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield ": still here\n\n"
            await asyncio.sleep(SSE_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"})


@router.post("/rollouts/{rollout_id}/{action}")
def rollout_action(request: Request, rollout_id: str, action: str, session: SignedIn,
                   csrf: FormText = "") -> Response:
    operator(session, csrf)
    if action not in ro.ACTIONS:
        raise HTTPException(404, f"no action '{action}'")
    try:
        ro.act(state_of(request).project, rollout_id, action, session.user.name)
    except FleetError as exc:
        return render(request, "error.html", 409, title="Not now", message=describe_error(exc))
    return RedirectResponse(f"/rollouts/{quote(rollout_id)}?done={action}", 303)
