"""The console's ASGI application: `create_app(project, settings)`.

Pages (HTML, Jinja2, htmx) are in pages.py, the JSON API in api.py; this module
holds what guards them all: the security headers, the Host check, who is
signed in, CSRF, and the login and logout forms.

>>> app = create_app(Project.locate("."), Settings())   # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8420)         # doctest: +SKIP
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet.console import users
from fleet.console.security import COOKIE, HEADERS, Session, csrf_ok
from fleet.console.state import ConsoleState, Settings
from fleet.errors import FleetError
from fleet.project import Project

LOGIN_COOKIE = "fleet_login"  # double-submit token of the login form (no session yet)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
FormText = Annotated[str, Form()]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class NotSignedIn(Exception):
    """No session or token: pages go to the login form, the API answers 401."""


class Forbidden(Exception):
    """Signed in, but not allowed: a viewer's action, or a missing CSRF token."""


class Guard:
    """ASGI middleware: security headers on every response; when serving on loopback,
    a Host header that is not a loopback name is refused (DNS rebinding)."""

    def __init__(self, app: Any, loopback_only: bool, listen_host: str = "") -> None:
        self.app, self.loopback_only = app, loopback_only
        # the address served on is a fine Host too (127.0.0.2 is loopback, but not a name below)
        self.names = {*LOOPBACK_NAMES, listen_host.lower(),
                      f"[{listen_host.lower()}]" if ":" in listen_host else ""} - {""}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.loopback_only and _host_name(scope) not in self.names:
            await JSONResponse({"error": "unexpected Host header"}, 421)(scope, receive, send)
            return

        started = time.perf_counter()

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                # the time to the response's head (bench/console_bench.py reads it)
                took = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={took:.1f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _host_name(scope: Scope) -> str:
    """The Host header without its port, lower case (host names are case-blind)."""
    raw: bytes = dict(scope.get("headers") or []).get(b"host", b"")
    host = raw.decode("latin-1").lower()
    return host.rsplit(":", 1)[0] if not host.endswith("]") else host


def state_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def signed_in(state: ConsoleState, sid: str | None) -> Session | None:
    """The live session of `sid`; a user since removed, or given another role, must sign
    in again (so `fleet serve user remove` or a demotion takes effect at once)."""
    session = state.sessions.get(sid)
    if session is not None and users.find(state.project, session.user.name) != session.user:
        state.sessions.end(sid)
        return None
    return session


def page_session(request: Request) -> Session:
    """The signed-in session of a page request (else NotSignedIn)."""
    session = signed_in(state_of(request), request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedIn()
    return session


def operator(session: Session, given_csrf: str | None) -> Session:
    """A session allowed to act: CSRF token right, role operator."""
    if not csrf_ok(session, given_csrf):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")
    if not session.user.can_act:
        raise Forbidden(f"{session.user.name} is a viewer: only operators can do that")
    return session


def api_user(request: Request) -> users.User:
    """Bearer token (scripts) or the browser's session (which needs X-CSRF-Token to act)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        user = users.user_for_token(state_of(request).project, auth[7:].strip())
        if user is None:
            raise NotSignedIn()
        return user
    session = page_session(request)
    if request.method != "GET" and not csrf_ok(session, request.headers.get("x-csrf-token")):
        raise Forbidden("missing or wrong X-CSRF-Token header")
    return session.user


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    state = state_of(request)
    session = state.sessions.get(request.cookies.get(COOKIE))
    html = state.templates.get_template(template).render(
        session=session, path=request.url.path, **context)
    return HTMLResponse(html, status)


def _safe_next(target: str) -> str:
    """Only a path on this site (no //host, no scheme): the login must not redirect away."""
    # browsers read "/\\host" as "//host": a backslash second is another site too
    return target if target[:1] == "/" and target[1:2] not in ("/", "\\") else "/"


def _add_auth_routes(app: FastAPI) -> None:
    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - URL name
        token = secrets.token_urlsafe(32)
        response = render(request, "login.html", csrf=token, next=_safe_next(next), error="")
        _cookie(request, response, LOGIN_COOKIE, token)
        return response

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: FormText = "", password: FormText = "",
              csrf: FormText = "", next: FormText = "/") -> Response:  # noqa: A002
        state = state_of(request)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, csrf):
            raise Forbidden("the login form expired: reload it and sign in again")
        # a name is at most 64 characters (users.check_name): longer ones count as one key
        keys = (f"ip:{request.client.host if request.client else '?'}", f"user:{username[:65]}")
        wait = state.limiter.blocked(*keys)
        if wait > 0:
            return render(request, "login.html", 429, csrf=csrf, next=_safe_next(next),
                          error=f"too many failed sign-ins: try again in {wait:.0f} s")
        user = users.check_password(state.project, username, password)
        if user is None:
            state.limiter.failed(*keys)
            return render(request, "login.html", 401, csrf=csrf, next=_safe_next(next),
                          error="wrong user name or password")
        state.limiter.succeeded(*keys)
        sid, _ = state.sessions.start(user)
        response = RedirectResponse(_safe_next(next), 303)
        _cookie(request, response, COOKIE, sid)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf: FormText = "") -> Response:
        session = page_session(request)
        if not csrf_ok(session, csrf):
            raise Forbidden("missing or wrong CSRF token")
        state_of(request).sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response


def _cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, httponly=True, samesite="strict", path="/",
                        secure=state_of(request).settings.secure)


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotSignedIn)
    def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "sign in, or send Authorization: Bearer <token>"},
                                401, headers={"WWW-Authenticate": "Bearer"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", 303)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc.detail)}, exc.status_code)
        return render(request, "error.html", exc.status_code, title="Not found"
                      if exc.status_code == 404 else "Error", message=str(exc.detail))

    @app.exception_handler(FleetError)
    def fleet_error(request: Request, exc: FleetError) -> Response:
        # a damaged state file met mid-request: its one line, not a bare 500 and a traceback
        from fleet.console.remote import describe_error

        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": describe_error(exc)}, 500)
        return render(request, "error.html", 500, title="Error", message=describe_error(exc))

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, 403)
        return render(request, "error.html", 403, title="Not allowed", message=str(exc))


def create_app(project: Project, settings: Settings) -> Any:
    """The console as an ASGI application (wrapped in its Guard middleware)."""
    state = ConsoleState(project, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        state.start()
        yield
        state.stop()

    app = FastAPI(title="edgefleet console API", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None,
                  description="The same shapes as the CLI's --json. Authenticate with "
                              "`Authorization: Bearer <token>` (`fleet serve user add`).")
    app.state.console = state
    app.mount("/static", StaticFiles(directory=str(files("fleet.console") / "static")),
              name="static")
    _add_handlers(app)
    _add_auth_routes(app)
    from fleet.console import api, pages

    app.include_router(pages.router)
    app.include_router(api.router)
    return Guard(app, settings.loopback_only, settings.host)
