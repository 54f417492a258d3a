"""The dashboard as an ASGI app: :func:`create_app` gives a Starlette app serving the page,
its static files and the JSON API of :mod:`calmq.dashboard.api`.

Mount it in an existing app (``Mount("/calmq", app=create_app(app))``) or run it with
``calmq dashboard``. Every route is relative: the page learns where it lives from the
ASGI ``root_path``. Read-only mode registers no state-changing route at all; the others are
POST only, behind authentication and CSRF checks (see :mod:`calmq.dashboard.auth`).
"""

from __future__ import annotations

import contextlib
import html
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from calmq.app import App
from calmq.dashboard import api
from calmq.dashboard.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Auth,
    TokenAuth,
    authenticate,
    challenge,
    csrf_problem,
    csrf_token,
    host_allowed,
    new_csrf_token,
    same,
    same_origin,
)
from calmq.dashboard.sampler import Sampler
from calmq.errors import CalmqError
from calmq.stores.base import Store

STATIC = Path(__file__).parent / "static"
#: Largest JSON body a POST may carry (a bulk action names at most ``api.MAX_BULK`` ids).
MAX_BODY = 256 * 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

Handler = Callable[[QueryParams, dict[str, Any]], dict[str, Any]]
Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(
    store_or_app: Store | App,
    *,
    read_only: bool = False,
    auth: Auth = None,
    prefix: str = "",
    allowed_hosts: Collection[str] | None = None,
    sampler: Sampler | None = None,
    sample_interval: float = 5.0,
) -> Starlette:
    """The dashboard for an :class:`App` (job arguments decoded) or a bare store.

    Args:
        read_only: Serve no state-changing endpoint at all.
        auth: ``TokenAuth(token)``, ``BasicAuth(user, password)`` or None (no login; keep
            it on loopback, with ``allowed_hosts``).
        prefix: Serve under this path (``"/calmq"``) when run on its own; leave empty when
            mounting the app, the mount gives the prefix.
        allowed_hosts: Host names (no port) the ``Host`` header may carry; None: any.
        sampler: Share a sampler (the app starts it, the caller stops it); by default one
            is made, started with the app's lifespan (or, mounted, by the first request)
            and stopped with it.
    """
    src = api.source_of(store_or_app)
    own_sampler = sampler is None
    sampler = sampler or Sampler(src.store, interval=sample_interval)
    hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
    dashboard = _Dashboard(src, sampler, read_only, auth, hosts)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # History from the start; a mounted app (no lifespan of its own) starts it lazily.
        sampler.start()
        yield
        if own_sampler:
            await run_in_threadpool(sampler.stop)

    middleware = [Middleware(SecurityHeaders)]
    inner = Starlette(routes=dashboard.routes(), middleware=middleware, lifespan=lifespan)
    inner.state.sampler = sampler
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    if not prefix:
        return inner
    outer = Starlette(
        routes=[Route("/", RedirectResponse(prefix + "/")), Mount(prefix, app=inner)],
        lifespan=lifespan,
    )
    outer.state.sampler = sampler
    return outer


class SecurityHeaders:
    """Adds a strict content security policy and no-sniff/no-frame headers to responses."""

    HEADERS = (
        (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
         b"style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
         b"form-action 'self'; base-uri 'self'"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
    )  # fmt: skip

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def base_path(request: Request) -> str:
    """Where the dashboard lives (its mount point), ending in ``/``."""
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


class _Dashboard:
    """The routes of one dashboard and the checks in front of them."""

    def __init__(
        self, src: api.Source, sampler: Sampler, read_only: bool, auth: Auth,
        allowed_hosts: Collection[str] | None,
    ) -> None:  # fmt: skip
        self.src = src
        self.sampler = sampler
        self.read_only = read_only
        self.auth = auth
        self.allowed_hosts = allowed_hosts
        self.index_template = (STATIC / "index.html").read_text(encoding="utf-8")
        self.login_template = (STATIC / "login.html").read_text(encoding="utf-8")

    def routes(self) -> list[BaseRoute]:
        src = self.src
        reads: dict[str, Handler] = {
            "/api/overview": lambda q, _b: api.overview(src),
            "/api/metrics": lambda q, _b: self.metrics(),
            "/api/workers": lambda q, _b: api.workers(src),
            "/api/jobs": lambda q, _b: api.list_jobs(
                src, q.get("queue", ""), q.get("state", "ready"), task=q.get("task", ""),
                offset=_int(q, "offset", 0), limit=_int(q, "limit", 50)),
            "/api/job": lambda q, _b: api.job_detail(src, q.get("queue", ""), q.get("id", "")),
            "/api/search": lambda q, _b: api.find_job(src, q.get("id", ""),
                                                      q.get("queue") or None),
            "/api/dead": lambda q, _b: api.dead_jobs(src, q.get("queue") or None,
                                                     limit=_int(q, "limit", 100)),
        }  # fmt: skip
        routes: list[BaseRoute] = [
            Route("/", self.index, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/api/csrf", self.csrf, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ]
        routes += [Route(path, self.endpoint(h), methods=["GET"]) for path, h in reads.items()]
        if not self.read_only:
            routes += [
                Route(path, self.endpoint(h, mutating=True), methods=["POST"])
                for path, h in self.actions().items()
            ]
        return routes

    def actions(self) -> dict[str, Handler]:
        src = self.src
        return {
            "/api/dead/replay": lambda _q, b: api.replay_dead(
                src, _opt_str(b, "queue"), _ids(b), every=b.get("all") is True),
            "/api/dead/purge": lambda _q, b: api.purge_dead(
                src, _opt_str(b, "queue"), _ids(b), every=b.get("all") is True),
            "/api/queues/pause": lambda _q, b: api.pause_queue(src, _str(b, "queue")),
            "/api/queues/resume": lambda _q, b: api.resume_queue(src, _str(b, "queue")),
            "/api/jobs/cancel": lambda _q, b: api.cancel_job(src, _str(b, "queue"),
                                                             _str(b, "id")),
        }  # fmt: skip

    def metrics(self) -> dict[str, Any]:
        self.sampler.start()
        if not self.sampler.samples():
            self.sampler.sample()  # the first page view has a point to show at once
        return self.sampler.to_json()

    # --- checks -----------------------------------------------------------------------
    def refusal(self, request: Request, *, page: bool) -> tuple[str | None, Response | None]:
        """``(how the request authenticated, None)``, or ``(None, the refusal)``."""
        if not host_allowed(request, self.allowed_hosts):
            return None, _error(400, "this Host is not served (DNS rebinding guard)")
        how = authenticate(request, self.auth)
        if how is not None:
            return how, None
        if page and isinstance(self.auth, TokenAuth):
            return None, RedirectResponse(base_path(request) + "login", status_code=303)
        return None, _error(401, "authentication required", challenge(self.auth))

    def endpoint(self, handler: Handler, *, mutating: bool = False) -> Endpoint:
        async def run(request: Request) -> Response:
            how, refused = self.refusal(request, page=False)
            if refused is not None:
                return refused
            body: dict[str, Any] = {}
            if mutating:
                problem = csrf_problem(request, how or "")
                if problem is not None:
                    return _error(403, problem)
                parsed = await _json_body(request)
                if isinstance(parsed, Response):
                    return parsed
                body = parsed
            try:
                data = await run_in_threadpool(handler, request.query_params, body)
            except api.BadRequest as exc:
                return _error(400, str(exc))
            except api.NotFound as exc:
                return _error(404, str(exc))
            except CalmqError as exc:
                return _error(503, f"{type(exc).__name__}: {exc}")
            return JSONResponse(data, headers={"cache-control": "no-store"})

        return run

    # --- pages ------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        _how, refused = self.refusal(request, page=True)
        if refused is not None:
            return refused
        self.sampler.start()
        token = csrf_token(request) or new_csrf_token()
        fields = {
            "__BASE__": base_path(request), "__CSRF__": token,
            "__READ_ONLY__": "true" if self.read_only else "false",
            "__LOGOUT__": "true" if isinstance(self.auth, TokenAuth) else "false",
        }  # fmt: skip
        response = HTMLResponse(_fill(self.index_template, fields))
        response.headers["cache-control"] = "no-store"
        self.set_csrf_cookie(request, response, token)
        return response

    async def csrf(self, request: Request) -> Response:
        _how, refused = self.refusal(request, page=False)
        if refused is not None:
            return refused
        token = csrf_token(request) or new_csrf_token()
        response = JSONResponse({"token": token, "header": "X-CSRF-Token"})
        self.set_csrf_cookie(request, response, token)
        return response

    async def login_form(self, request: Request, error: str = "", status: int = 200) -> Response:
        if not isinstance(self.auth, TokenAuth):
            return RedirectResponse(base_path(request), status_code=303)
        fields = {"__BASE__": base_path(request), "__ERROR__": error}
        page = HTMLResponse(_fill(self.login_template, fields), status_code=status)
        page.headers["cache-control"] = "no-store"
        return page

    async def login(self, request: Request) -> Response:
        if not isinstance(self.auth, TokenAuth):
            return RedirectResponse(base_path(request), status_code=303)
        if not host_allowed(request, self.allowed_hosts) or not same_origin(request):
            return _error(403, "cross-origin login refused")
        form = await request.form(max_files=0, max_fields=4)
        given = form.get("token")
        await form.close()
        if not isinstance(given, str) or not same(given.strip(), self.auth.token):
            return await self.login_form(request, "That token is not right.", 401)
        response = RedirectResponse(base_path(request), status_code=303)
        response.set_cookie(SESSION_COOKIE, self.auth.session_value(), path=base_path(request),
                            httponly=True, samesite="lax",
                            secure=request.url.scheme == "https")  # fmt: skip
        self.set_csrf_cookie(request, response, csrf_token(request) or new_csrf_token())
        return response

    async def logout(self, request: Request) -> Response:
        how, refused = self.refusal(request, page=False)
        if refused is not None:
            return refused
        problem = csrf_problem(request, how or "")
        if problem is not None:
            return _error(403, problem)
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(SESSION_COOKIE, path=base_path(request))
        return response

    @staticmethod
    def set_csrf_cookie(request: Request, response: Response, token: str) -> None:
        response.set_cookie(CSRF_COOKIE, token, path=base_path(request), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")  # fmt: skip


def _fill(template: str, fields: Mapping[str, str]) -> str:
    for name, value in fields.items():
        template = template.replace(name, html.escape(value, quote=True))
    return template


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


async def _json_body(request: Request) -> dict[str, Any] | Response:
    """The request's JSON object; a refusal for other content types (an HTML form cannot
    send JSON, one more wall against cross-site posts), oversize or malformed bodies."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error(415, "send the body as application/json")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return _error(413, f"body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return _error(400, "body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    return body


def _int(params: QueryParams, name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except ValueError:
        raise api.BadRequest(f"{name} must be an integer") from None


def _str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise api.BadRequest(f"{name} must be a string")
    return value


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    return _str(body, name) if body.get(name) not in (None, "") else None


def _ids(body: dict[str, Any]) -> list[str] | None:
    ids = body.get("ids")
    if ids is None:
        return None
    if not isinstance(ids, list):
        raise api.BadRequest("ids must be a list of job ids")
    return ids
