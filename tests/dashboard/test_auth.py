"""Dashboard security: token and basic auth, CSRF, read-only mode, Host checks, mounting
under a prefix, and the CLI's refusal to serve an open dashboard beyond loopback."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from calmq import App
from calmq.cli.dashboard import dashboard
from calmq.dashboard.app import create_app
from calmq.dashboard.auth import BasicAuth, TokenAuth
from tests.dashboard.live import LiveServer, make_dead, wait_until
from tests.redis_server import free_port

Serve = Callable[..., LiveServer]
TOKEN = "tok-" + "x" * 28
ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ["/api/dead/replay", "/api/dead/purge", "/api/queues/pause", "/api/queues/resume",
           "/api/jobs/cancel"]  # fmt: skip


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="calmq-csrf" content="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def test_token_auth_api_and_pages(sqlite_app: App, serve: Serve) -> None:
    server = serve(sqlite_app, auth=TokenAuth(TOKEN))
    with server.client() as anon:
        refused = anon.get("/api/overview")
        assert refused.status_code == 401 and "Bearer" in refused.headers["www-authenticate"]
        assert (
            anon.get("/api/overview", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        page = anon.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert anon.post("/api/queues/pause", json={"queue": "default"}).status_code == 401
        assert anon.get("/static/app.css").status_code == 200  # the login page needs it
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with server.client(headers=bearer) as script:
        assert script.get("/api/overview").status_code == 200
        # A bearer header cannot be forged by another site: no CSRF token needed.
        paused = script.post("/api/queues/pause", json={"queue": "default"})
        assert paused.json() == {"queue": "default", "paused": True}


def test_login_cookie_and_csrf(sqlite_app: App, serve: Serve) -> None:
    sqlite_app.enqueue("always_fails", "/dev/null")
    dead_id = make_dead(sqlite_app.store, "default")
    server = serve(sqlite_app, auth=TokenAuth(TOKEN))
    with server.client() as browser:
        assert "Log in" in browser.get("/login").text
        wrong = browser.post("/login", data={"token": "not-it"})
        assert wrong.status_code == 401 and "not right" in wrong.text
        assert "calmq_session" not in browser.cookies
        cross = browser.post(
            "/login", data={"token": TOKEN}, headers={"Origin": "http://evil.test"}
        )
        assert cross.status_code == 403
        ok = browser.post("/login", data={"token": TOKEN})
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        session = browser.cookies["calmq_session"]
        assert TOKEN not in session and session == TokenAuth(TOKEN).session_value()
        assert "httponly" in ok.headers["set-cookie"].lower()
        page = browser.get("/")
        assert page.status_code == 200 and "<title>calmq dashboard</title>" in page.text
        csrf = csrf_of(page)
        body = {"queue": "default", "ids": [dead_id]}
        # Logged in by cookie, so a cross-site post would carry it too: CSRF token required.
        assert browser.post("/api/dead/replay", json=body).status_code == 403
        wrong_csrf = browser.post("/api/dead/replay", json=body, headers={"X-CSRF-Token": "x" * 40})
        assert wrong_csrf.status_code == 403
        evil = {"X-CSRF-Token": csrf, "Origin": "http://evil.test"}
        foreign = browser.post("/api/dead/replay", json=body, headers=evil)
        assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]
        same = browser.post("/api/dead/replay", json=body,
                            headers={"X-CSRF-Token": csrf, "Origin": server.url})  # fmt: skip
        assert same.json() == {"replayed": 1}
        assert browser.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert browser.get("/api/overview").status_code == 401


def test_basic_auth(sqlite_app: App, serve: Serve) -> None:
    server = serve(sqlite_app, auth=BasicAuth("ops", "s3cret:with:colons"))
    with server.client() as anon:
        refused = anon.get("/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Basic realm="calmq dashboard"')
        assert anon.get("/api/overview", auth=("ops", "wrong")).status_code == 401
        assert anon.get("/api/overview", auth=("other", "s3cret:with:colons")).status_code == 401
        bad = anon.get("/api/overview", headers={"Authorization": "Basic !!!"})
        assert bad.status_code == 401
    with server.client(auth=("ops", "s3cret:with:colons")) as user:
        page = user.get("/")
        assert page.status_code == 200
        # The browser re-sends basic credentials on its own: POSTs need the CSRF token.
        assert user.post("/api/queues/pause", json={"queue": "q"}).status_code == 403
        ok = user.post("/api/queues/pause", json={"queue": "q"},
                       headers={"X-CSRF-Token": csrf_of(page)})  # fmt: skip
        assert ok.status_code == 200


def test_csrf_needed_without_auth_too(sqlite_app: App, serve: Serve) -> None:
    server = serve(sqlite_app)
    with server.client() as client:
        assert client.post("/api/queues/pause", json={"queue": "q"}).status_code == 403
        token = client.get("/api/csrf").json()["token"]
        referer = client.post("/api/queues/pause", json={"queue": "q"},
                              headers={"X-CSRF-Token": token,
                                       "Referer": "http://evil.test/page"})  # fmt: skip
        assert referer.status_code == 403
        ok = client.post("/api/queues/pause", json={"queue": "q"}, headers={"X-CSRF-Token": token})
        assert ok.status_code == 200


def test_read_only_has_no_mutating_routes(sqlite_app: App, serve: Serve) -> None:
    asgi = create_app(sqlite_app, read_only=True)
    methods = {m for route in asgi.routes if isinstance(route, Route)
               for m in (route.methods or ()) if route.path.startswith("/api")}  # fmt: skip
    assert methods == {"GET", "HEAD"}
    server = serve(sqlite_app, asgi=asgi)
    with server.client() as client:
        page = client.get("/")
        assert 'name="calmq-read-only" content="true"' in page.text
        headers = {"X-CSRF-Token": csrf_of(page)}
        for path in ACTIONS:
            response = client.post(path, json={"queue": "default", "all": True}, headers=headers)
            assert response.status_code in (404, 405), path
        assert client.get("/api/overview").status_code == 200
    assert not sqlite_app.store.queue_config("default").paused


def test_host_guard_against_dns_rebinding(sqlite_app: App, serve: Serve) -> None:
    server = serve(sqlite_app, allowed_hosts={"127.0.0.1", "localhost", "::1"})
    with server.client() as client:
        assert client.get("/api/overview").status_code == 200
        assert client.get("/", headers={"Host": "localhost:9"}).status_code == 200
        assert client.get("/", headers={"Host": "[::1]:9"}).status_code == 200
        rebound = client.get("/api/overview", headers={"Host": "attacker.test:8000"})
        assert rebound.status_code == 400


def test_security_headers(sqlite_app: App, serve: Serve) -> None:
    with serve(sqlite_app).client() as client:
        page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"


def test_prefix_option(sqlite_app: App, serve: Serve) -> None:
    sqlite_app.enqueue("append", "/dev/null", "x")
    server = serve(sqlite_app, prefix="/calmq", auth=TokenAuth(TOKEN))
    with server.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.get("/").headers["location"] == "/calmq/"
        page = client.get("/calmq/")
        assert '<base href="/calmq/">' in page.text
        assert "path=/calmq/" in page.headers["set-cookie"].lower()
        assert client.get("/calmq/api/overview").json()["queues"][0]["ready"] == 1
        assert client.get("/calmq/static/app.js").status_code == 200
        assert client.get("/api/overview").status_code == 404
    with server.client() as anon:
        assert anon.get("/calmq/").headers["location"] == "/calmq/login"


def test_mounted_inside_another_starlette_app(sqlite_app: App, serve: Serve) -> None:
    sqlite_app.enqueue("append", "/dev/null", "x")

    async def home(_request: object) -> object:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("the host app")

    host = Starlette(routes=[Route("/", home),
                             Mount("/ops/calmq", app=create_app(sqlite_app))])  # fmt: skip
    server = serve(None, asgi=host)
    with server.client() as client:
        assert client.get("/").text == "the host app"
        page = client.get("/ops/calmq/")
        assert '<base href="/ops/calmq/">' in page.text
        token = csrf_of(page)
        assert client.get("/ops/calmq/api/overview").json()["queues"][0]["ready"] == 1
        paused = client.post("/ops/calmq/api/queues/pause", json={"queue": "default"},
                             headers={"X-CSRF-Token": token})  # fmt: skip
        assert paused.json()["paused"] is True


def test_cli_refuses_open_dashboard_beyond_loopback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite3"
    runner = CliRunner()
    result = runner.invoke(dashboard, ["--url", url, "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without authentication" in result.output and "--token" in result.output
    short = runner.invoke(dashboard, ["--url", url, "--token", "short"])
    assert short.exit_code == 2 and "at least 16 characters" in short.output
    both = runner.invoke(dashboard, ["--url", url, "--token", TOKEN, "--basic-auth", "a:b"])
    assert both.exit_code == 2
    bad_basic = runner.invoke(dashboard, ["--url", url, "--basic-auth", "nopassword"])
    assert bad_basic.exit_code == 2 and "user:password" in bad_basic.output


@pytest.mark.slow
def test_cli_serves_and_never_prints_credentials(tmp_path: Path) -> None:
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    command = [sys.executable, "-m", "calmq", "dashboard", "--url",
               f"sqlite:///{tmp_path}/db.sqlite3", "--port", str(port), "--prefix", "/calmq",
               "--token-file", str(token_file), "--log-level", "info"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}/calmq"
    try:
        with httpx.Client(timeout=5) as client:

            def up() -> bool:
                try:
                    return client.get(base + "/api/overview").status_code == 401
                except httpx.TransportError:
                    return proc.poll() is not None

            wait_until(up, timeout=30, what="the dashboard to answer")
            assert proc.poll() is None
            ok = client.get(base + "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200
            client.post(base + "/login", data={"token": "wrong-guess-" + "y" * 20})
            client.post(base + "/login", data={"token": TOKEN})
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert "calmq dashboard on http://127.0.0.1:" in output and "auth token" in output
    assert TOKEN not in output and "wrong-guess" not in output
    assert "GET /calmq/api/overview" in output  # the access log runs, without secrets
