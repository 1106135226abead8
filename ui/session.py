"""The browser UI's cookie sessions: the login page, logout, and the session check.

A browser cannot send bearer headers, so the UI under ``/ui`` gets a cookie session:
``/ui/login`` (an HTML form, ``ui/templates/login.html``, checked against the same users
file with the same throttle as ``POST /auth/token``) sets an HttpOnly, ``SameSite=Strict``
cookie, scoped to ``/ui``, that holds a short-lived JWT with its own audience. That
cookie is accepted under ``/ui`` only; the API stays bearer-only, so a browser cannot be
tricked into calling it (no CSRF). ``/ui/logout`` revokes the session's ``jti`` until it
would have expired. API clients may script the UI with a bearer token instead.

:class:`UISessions` is the :class:`~tabserve.http.auth.SessionBackend` the service gives
the auth middleware for ``/ui``.
"""

from __future__ import annotations

import hmac
import html
import logging
import secrets
import time
from pathlib import Path
from string import Template
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from tabserve.core.errors import (
    ForbiddenError,
    InvalidCredentialsError,
    MethodNotAllowedError,
    NotReadyError,
    ServerBusyError,
    TooManyRequestsError,
    UnauthenticatedError,
    UnsupportedMediaTypeError,
)
from tabserve.http.auth import AuthMiddleware, bearer_token
from tabserve.http.requests import headers, media_type, read_form
from tabserve.http.settings import EdgeSettings
from tabserve.security.revocation import revoke_token_id
from tabserve.security.scopes import grants
from tabserve.security.state import StateStoreError
from tabserve.security.tokens import (
    issue_session_token,
    unverified_jti,
    verify_session_token,
    verify_token,
)

logger = logging.getLogger("tabserve.auth")

UI_PREFIX = "/ui"
UI_LOGIN_PATH = "/ui/login"
UI_LOGOUT_PATH = "/ui/logout"
UI_SCOPE = "predict"
SESSION_COOKIE = "tabserve_ui_session"
CSRF_COOKIE = "tabserve_ui_csrf"
LOGIN_PAGE = Template((Path(__file__).parent / "templates" / "login.html").read_text("utf-8"))
_LOGIN_MESSAGES = {
    "invalid": "Unknown user or wrong password.",
    "throttled": "Too many failed logins; try again later.",
    "expired": "Your session has expired; please log in again.",
    "scope": f"This account lacks the {UI_SCOPE!r} scope the UI needs.",
    "csrf": "The login form expired; please try again.",
    "busy": "The server is busy with other logins; please try again in a moment.",
    "unavailable": "Logins are unavailable right now; please try again shortly.",
    "logout": "You are logged out.",
}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def is_ui_path(path: str) -> bool:
    """Whether ``path`` belongs to the browser UI (where the session cookie is accepted)."""
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


class UISessions:
    """Cookie sessions for ``/ui`` (module doc)."""

    prefix = UI_PREFIX

    def handles(self, path: str) -> bool:
        return is_ui_path(path)

    async def __call__(
        self, auth: AuthMiddleware, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        """Login and logout pages, then a session (or bearer) check for the rest of /ui."""
        path = scope["path"]
        if path == UI_LOGIN_PATH:
            await self._login(auth, scope, receive, send)
            return
        if path == UI_LOGOUT_PATH:
            await self._logout(auth, scope)
            await _redirect(scope, receive, send, _login_url(scope, "logout"), clear_session=True)
            return
        settings = auth.settings()
        if "authorization" in headers(scope):  # API clients may script the UI's API
            claims = await auth.verified(settings, verify_token(settings, bearer_token(scope)))
        else:
            cookie = Request(scope).cookies.get(SESSION_COOKIE)
            try:
                if not cookie:
                    raise UnauthenticatedError(
                        f"log in at {UI_LOGIN_PATH} (or send a bearer token)",
                        error="invalid_request",
                    )
                claims = await auth.verified(settings, verify_session_token(settings, cookie))
            except UnauthenticatedError:
                if _wants_page(scope):  # a person at the browser: show the login form
                    reason = "expired" if cookie else None
                    await _redirect(
                        scope, receive, send, _login_url(scope, reason), clear_session=True
                    )
                    return
                raise
        if not claims.allows(UI_SCOPE):
            raise ForbiddenError(f"the UI needs the {UI_SCOPE!r} scope", scope=UI_SCOPE)
        auth.admit(scope, settings, claims)
        await auth.app(scope, receive, send)

    @staticmethod
    async def _logout(auth: AuthMiddleware, scope: dict[str, Any]) -> None:
        """Revoke the session of the request's cookie (if it is a valid one) until it
        would have expired, so a copy of the cookie is refused from now on."""
        cookie = Request(scope).cookies.get(SESSION_COOKIE)
        if not cookie:
            return
        settings = auth.settings()
        try:
            claims = verify_session_token(settings, cookie)
        except UnauthenticatedError:
            return  # expired or forged: nothing to revoke
        ttl = claims.exp - int(time.time()) + settings.jwt_leeway_s
        try:
            await revoke_token_id(auth.state_store(settings), claims.jti, ttl)
        except StateStoreError as exc:
            logger.error("logout of %r could not revoke its session: %s", claims.sub, exc)
            raise NotReadyError("logout is unavailable; retry shortly") from None
        logger.info("UI session of %r ended (jti %s revoked for %d s)", claims.sub, claims.jti, ttl)

    @staticmethod
    async def _login(auth: AuthMiddleware, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``GET /ui/login``: the form; ``POST``: check the password, start a session.

        Every outcome of a POST is a redirect (post/redirect/get), so a browser never
        re-submits a password and no error page bypasses the JSON envelope.
        """
        settings = auth.settings()
        request = Request(scope, receive)
        if scope["method"] in ("GET", "HEAD"):
            fresh_csrf = secrets.token_urlsafe(32)
            message = _LOGIN_MESSAGES.get(request.query_params.get("msg", ""), "")
            response = HTMLResponse(
                login_page(scope.get("root_path", "") + UI_LOGIN_PATH, fresh_csrf, message),
                headers=PAGE_HEADERS,
            )
            response.set_cookie(
                CSRF_COOKIE,
                fresh_csrf,
                max_age=3600,
                path=UI_LOGIN_PATH,
                secure=_secure_cookie(settings, scope),
                httponly=True,
                samesite="strict",
            )
            await response(scope, receive, send)
            return
        if scope["method"] != "POST":
            raise MethodNotAllowedError("the login page accepts GET and POST")
        if media_type(scope) != "application/x-www-form-urlencoded":
            raise UnsupportedMediaTypeError("the login form is application/x-www-form-urlencoded")
        form = await read_form(request)
        username, password, csrf = (form.get(k) for k in ("username", "password", "csrf"))
        if not (isinstance(username, str) and isinstance(password, str) and username):
            await _redirect(scope, receive, send, _login_url(scope, "invalid"))
            return
        expected = request.cookies.get(CSRF_COOKIE)
        if not (
            isinstance(csrf, str)
            and expected
            and hmac.compare_digest(csrf.encode(), expected.encode())
        ):
            await _redirect(scope, receive, send, _login_url(scope, "csrf"))
            return
        outcome = await _check_password(auth, settings, scope, username, password)
        if isinstance(outcome, str):
            await _redirect(scope, receive, send, _login_url(scope, outcome))
            return
        token, ttl = issue_session_token(settings, username, outcome)
        logger.info(
            "started a UI session for %r (%d s, jti %s)", username, ttl, unverified_jti(token)
        )
        await _redirect(
            scope,
            receive,
            send,
            scope.get("root_path", "") + UI_PREFIX + "/",
            session=(token, ttl, _secure_cookie(settings, scope)),
        )


async def _check_password(
    auth: AuthMiddleware, settings: EdgeSettings, scope: dict[str, Any], user: str, password: str
) -> list[str] | str:
    """The user's scopes, or the login page's message key for why not."""
    try:
        record = await auth.authenticate(settings, scope, user, password)
    except ServerBusyError:
        return "busy"
    except TooManyRequestsError:
        return "throttled"
    except NotReadyError:
        return "unavailable"
    except InvalidCredentialsError:
        return "invalid"
    if not grants(record.scopes, UI_SCOPE):
        logger.warning("UI login refused for %r: no %r scope", user, UI_SCOPE)
        return "scope"
    return list(record.scopes)


def login_page(action: str, csrf: str, message: str) -> str:
    """The login form (no script, no external resource)."""
    notice = f'<p class="msg" role="alert">{html.escape(message)}</p>' if message else ""
    return LOGIN_PAGE.substitute(notice=notice, action=html.escape(action), csrf=html.escape(csrf))


def _wants_page(scope: dict[str, Any]) -> bool:
    """Whether this is a browser asking for the UI page itself (not for its API)."""
    if scope["method"] not in ("GET", "HEAD") or scope["path"] not in (UI_PREFIX, UI_PREFIX + "/"):
        return False
    return "text/html" in headers(scope).get("accept", "")


def _secure_cookie(settings: EdgeSettings, scope: dict[str, Any]) -> bool:
    if settings.ui_cookie_secure is not None:
        return settings.ui_cookie_secure
    return settings.env == "production" or scope.get("scheme") == "https"


def _login_url(scope: dict[str, Any], message: str | None) -> str:
    url = scope.get("root_path", "") + UI_LOGIN_PATH
    return f"{url}?msg={message}" if message else url


async def _redirect(
    scope: dict[str, Any],
    receive: Any,
    send: Any,
    location: str,
    *,
    session: tuple[str, int, bool] | None = None,
    clear_session: bool = False,
) -> None:
    """A 303 to ``location``, setting (token, ttl, secure) or clearing the session cookie."""
    response = RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})
    if session is not None:
        token, ttl, secure = session
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=ttl,
            path=UI_PREFIX,
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(CSRF_COOKIE, path=UI_LOGIN_PATH)
    elif clear_session:
        response.delete_cookie(SESSION_COOKIE, path=UI_PREFIX, httponly=True, samesite="strict")
    await response(scope, receive, send)
