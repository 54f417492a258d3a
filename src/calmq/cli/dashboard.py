"""``calmq dashboard``: serve the web dashboard with uvicorn (the ``dashboard`` extra).

Secure by default: bound to loopback it may run without a login (and then answers only to
loopback ``Host`` names); bound to anything else it refuses to start without ``--token`` or
``--basic-auth``, unless told ``--insecure-no-auth``. Credentials are never printed.
"""

from __future__ import annotations

from typing import TextIO

import click

from calmq.app import App
from calmq.settings import Settings
from calmq.stores import open_store
from calmq.stores.base import Store

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
#: How to make a good token (shown in errors; not a secret).
TOKEN_HINT = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'  # noqa: S105


@click.command()
@click.option("--url", default=None, help="Store URL (default: CALMQ_URL or SQLite).")
@click.option("--app", "app_path", default=None,
              help="Use APP's store and serializer (job arguments are decoded).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--read-only", is_flag=True, help="Serve no state-changing action at all.")
@click.option("--token", default=None, help="Require this token (bearer header or login form).")
@click.option("--token-file", type=click.File("r"), default=None,
              help="Read the token from this file (keeps it out of `ps`).")  # fmt: skip
@click.option("--basic-auth", default=None, metavar="USER:PASS", help="Require HTTP basic auth.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Allow a non-loopback --host without any login.")  # fmt: skip
@click.option("--prefix", default="", help="Serve under this path, e.g. /calmq.")
@click.option("--sample-interval", default=5.0, show_default=True,
              help="Seconds between samples for the charts.")  # fmt: skip
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
def dashboard(url: str | None, app_path: str | None, host: str, port: int, read_only: bool,
              token: str | None, token_file: TextIO | None, basic_auth: str | None,
              insecure_no_auth: bool, prefix: str, sample_interval: float,
              log_level: str) -> None:  # fmt: skip
    """Serve the web dashboard: queues, jobs, dead letters and workers."""
    try:
        import uvicorn

        from calmq.dashboard.app import create_app
        from calmq.dashboard.auth import MIN_TOKEN_LENGTH, BasicAuth, TokenAuth
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra: pip install 'calmq[dashboard]' ({exc})"
        ) from None
    if token_file is not None:
        if token is not None:
            raise click.UsageError("give --token or --token-file, not both")
        token = token_file.read().strip()
    if token is not None and basic_auth is not None:
        raise click.UsageError("give --token or --basic-auth, not both")
    auth: TokenAuth | BasicAuth | None = None
    if token is not None:
        if len(token) < MIN_TOKEN_LENGTH:
            raise click.BadParameter(f"use at least {MIN_TOKEN_LENGTH} characters, e.g. from"
                                     f" {TOKEN_HINT}", param_hint="--token")  # fmt: skip
        auth = TokenAuth(token)
    elif basic_auth is not None:
        try:
            auth = BasicAuth.parse(basic_auth)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--basic-auth") from None
    loopback = host.lower() in LOOPBACK
    if auth is None and not loopback and not insecure_no_auth:
        raise click.UsageError(
            f"refusing to serve the dashboard on {host} without authentication: anyone who can"
            " reach it could replay, delete and cancel jobs. Give --token (make one with"
            f" {TOKEN_HINT}) or --basic-auth USER:PASS, bind to 127.0.0.1, or, if something in"
            " front of it already checks who comes in, pass --insecure-no-auth."
        )
    source, store = _source(url, app_path)
    allowed_hosts = LOOPBACK if auth is None and loopback else None
    asgi = create_app(source, read_only=read_only, auth=auth, prefix=prefix,
                      allowed_hosts=allowed_hosts, sample_interval=sample_interval)  # fmt: skip
    shown_host = f"[{host}]" if ":" in host else host
    path = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    kind = "token" if isinstance(auth, TokenAuth) else "basic" if auth else "none"
    click.echo(f"calmq dashboard on http://{shown_host}:{port}{path} (store {store.display_url},"
               f" auth {kind}{', read-only' if read_only else ''})")  # fmt: skip
    try:
        uvicorn.run(asgi, host=host, port=port, log_level=log_level, server_header=False)
    finally:
        store.close()


def _source(url: str | None, app_path: str | None) -> tuple[App | Store, Store]:
    """The App when one is named (its serializer decodes arguments), else a bare store;
    and the store to close at the end."""
    if app_path:
        from calmq.cli.main import load_app

        app = load_app(app_path)
        return app, app.store
    store = open_store(url, Settings.from_env(url=url) if url else Settings.from_env())
    return store, store
