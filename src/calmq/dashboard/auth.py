"""Who may use the dashboard, and proof that a state-changing request is meant.

Authentication, one of:

* :class:`TokenAuth`: ``Authorization: Bearer <token>`` (scripts), or a session cookie set
  by the login form. The cookie holds an HMAC of the token, never the token itself.
* :class:`BasicAuth`: HTTP basic (the browser asks for user and password).
* ``None``: nobody is asked (meant for a dashboard bound to loopback only; then
  ``allowed_hosts`` refuses other ``Host`` headers, which defeats DNS rebinding).

CSRF, for every POST except those authenticated by a bearer header (a browser never adds
that header on its own): the ``Origin`` (or, without it, ``Referer``) must name this host,
and the ``X-CSRF-Token`` header must equal the ``calmq_csrf`` cookie (double submit).

Every secret is compared with :func:`hmac.compare_digest`; nothing here logs a credential.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.requests import Request

SESSION_COOKIE = "calmq_session"
CSRF_COOKIE = "calmq_csrf"
CSRF_HEADER = "x-csrf-token"
_SESSION_CONTEXT = b"calmq-dashboard-session-v1"
#: Shortest token ``calmq dashboard`` accepts (a guessable token is no protection).
MIN_TOKEN_LENGTH = 16


@dataclasses.dataclass(frozen=True)
class TokenAuth:
    """A shared secret: bearer header for scripts, login form + cookie for browsers."""

    token: str = dataclasses.field(repr=False)

    def session_value(self) -> str:
        """What the session cookie holds: an HMAC of the token, so a leaked cookie does not
        leak the token (and changing the token logs every browser out)."""
        return hmac.new(self.token.encode(), _SESSION_CONTEXT, hashlib.sha256).hexdigest()


@dataclasses.dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication with one user."""

    username: str
    password: str = dataclasses.field(repr=False)

    @classmethod
    def parse(cls, spec: str) -> BasicAuth:
        """``user:pass`` (the password may contain colons)."""
        username, sep, password = spec.partition(":")
        if not sep or not username or not password:
            raise ValueError("expected user:password, both non-empty")
        return cls(username, password)


Auth = TokenAuth | BasicAuth | None


def same(a: str, b: str) -> bool:
    """Constant-time equality of two strings."""
    return hmac.compare_digest(a.encode(), b.encode())


def authenticate(request: Request, auth: Auth) -> str | None:
    """How the request proved who it is (``"none"``, ``"bearer"``, ``"cookie"``,
    ``"basic"``), or None when it did not."""
    if auth is None:
        return "none"
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if isinstance(auth, TokenAuth):
        if scheme.lower() == "bearer" and same(value.strip(), auth.token):
            return "bearer"
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return "cookie" if cookie and same(cookie, auth.session_value()) else None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, _, password = decoded.partition(":")
    # Both compared, always: the time taken says nothing about which one was wrong.
    user_ok = same(username, auth.username)
    password_ok = same(password, auth.password)
    return "basic" if user_ok and password_ok else None


def challenge(auth: Auth) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 for this kind of auth."""
    if isinstance(auth, BasicAuth):
        return {"WWW-Authenticate": 'Basic realm="calmq dashboard", charset="UTF-8"'}
    if isinstance(auth, TokenAuth):
        return {"WWW-Authenticate": 'Bearer realm="calmq dashboard"'}
    return {}


def new_csrf_token() -> str:
    """A fresh random CSRF token."""
    return secrets.token_urlsafe(32)


def csrf_token(request: Request) -> str | None:
    """The request's CSRF cookie, when it has a plausible one."""
    token = request.cookies.get(CSRF_COOKIE, "")
    return token if 20 <= len(token) <= 100 else None


def same_origin(request: Request) -> bool:
    """True when ``Origin`` (or, without it, ``Referer``) names the host the request was sent
    to. Requests carrying neither (old clients, some privacy settings) pass this check and
    still need the CSRF token."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    host = request.headers.get("host", "")
    # The scheme is not compared: behind a TLS-terminating proxy this app sees http.
    return bool(host) and urlsplit(source).netloc.lower() == host.lower()


def csrf_problem(request: Request, how: str) -> str | None:
    """Why a state-changing request must be refused (None: it may go ahead)."""
    if how == "bearer":
        return None  # a script's header; a cross-site form or fetch cannot add it
    if not same_origin(request):
        return "cross-origin request refused"
    cookie = csrf_token(request)
    sent = request.headers.get(CSRF_HEADER, "")
    if cookie is None or not sent or not same(sent, cookie):
        return "missing or wrong CSRF token (send the calmq_csrf cookie's value as X-CSRF-Token)"
    return None


def host_allowed(request: Request, allowed: Collection[str] | None) -> bool:
    """True when the ``Host`` header (without port) is one of ``allowed`` (None: any)."""
    if allowed is None:
        return True
    host = request.headers.get("host", "")
    # An IPv6 address comes in brackets ("[::1]:8000"); anything else is "name[:port]".
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    return name.lower() in allowed
