"""JWT issue and verification, revocation, and the auth ASGI middleware.

Tokens are short-lived JWTs carrying ``sub``, ``scopes``, ``iss``, ``aud``,
``exp``, ``iat`` and ``jti``, and a ``kid`` header derived from the key
(:attr:`Settings.key_id`). Tokens are signed with the current key only; verification
pins the algorithm (so ``alg: none`` and algorithm confusion are refused), picks the
key by ``kid`` among the current key and the previous ones still listed (a rotation
overlap, :attr:`Settings.verification_keys`; an unknown ``kid`` is refused, never used
to find a key), and requires every one of those claims. A verified token is then
checked against the revocations in the state store (:mod:`tabserve.security.state`): its
``jti`` (a logout, ``tabserve token revoke``), or its subject (a removed user).

:class:`AuthMiddleware` is pure ASGI: BentoML turns exceptions raised in an API
into its own 401/403 bodies, so the middleware answers auth failures itself,
before any route (including mounted apps such as ``/ui``) is reached. It also
serves the OAuth2 password flow at ``POST /auth/token``, behind the login defences of
:mod:`tabserve.security.login_guard` (throttle, concurrency bound).

The browser UI under ``/ui`` cannot send bearer headers, so it gets a cookie
session: ``/ui/login`` (an HTML form checked against the same users file, with the
same throttle) sets an HttpOnly, ``SameSite=Strict`` cookie, scoped to ``/ui``,
that holds a short-lived JWT with its own audience. That cookie is accepted under
``/ui`` only; the API stays bearer-only, so a browser cannot be tricked into
calling it (no CSRF). ``/ui/logout`` revokes the session's ``jti`` until it expires.

The client address used by the throttle is the request's (``scope["client"]``), which
uvicorn has already taken from ``X-Forwarded-For`` when, and only when, the peer is in
``TABSERVE_TRUSTED_PROXIES`` (:meth:`tabserve.settings.ServerSettings.apply_trusted_proxies`).
"""

from __future__ import annotations

import hmac
import html
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from tabserve.core.errors import (
    ForbiddenError,
    InvalidCredentialsError,
    MalformedRequestError,
    MethodNotAllowedError,
    NotReadyError,
    RequestValidationError,
    ServerBusyError,
    TooManyRequestsError,
    UnauthenticatedError,
    UnsupportedMediaTypeError,
)
from tabserve.http.envelope import StateProvider
from tabserve.security.login_guard import LoginGuard
from tabserve.security.state import StateStore, StateStoreError, open_state
from tabserve.security.users import UserError, UserRecord, UserStore, hasher_for, parse_scopes
from tabserve.serving.metrics import auth_metrics
from tabserve.settings import SCOPES, Settings

logger = logging.getLogger("tabserve.auth")

TOKEN_PATH = "/auth/token"
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "scopes", "jti")

# Health, metrics, docs and the token endpoint are open; everything else needs a token.
OPEN_PATHS = frozenset(
    {"/livez", "/healthz", "/readyz", "/metrics", "/", "/docs.json", "/schema.json", TOKEN_PATH}
)
OPEN_PREFIXES = ("/assets/", "/static_content/")
# Routes that need a scope on top of a valid token; ``admin`` grants every scope.
ROUTE_SCOPES = {"/predict": "predict", "/explain": "explain"}
# Kinds of revocation in the state store: one token, or every token of a subject
# issued up to the recorded time.
REVOKED_JTI = "jti"
REVOKED_SUB = "sub"

# The browser UI: a cookie session, accepted under UI_PREFIX only.
UI_PREFIX = "/ui"
UI_LOGIN_PATH = "/ui/login"
UI_LOGOUT_PATH = "/ui/logout"
UI_SCOPE = "predict"
SESSION_COOKIE = "tabserve_ui_session"
CSRF_COOKIE = "tabserve_ui_csrf"
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


@dataclass(frozen=True)
class Claims:
    """The verified claims of a token."""

    sub: str
    scopes: tuple[str, ...]
    jti: str
    exp: int
    iat: int = 0

    def allows(self, scope: str) -> bool:
        """Whether the token grants ``scope`` (``admin`` grants all)."""
        return scope in self.scopes or "admin" in self.scopes


def issue_token(
    settings: Settings,
    sub: str,
    scopes: Iterable[str],
    ttl_s: int | None = None,
    *,
    audience: str | None = None,
) -> tuple[str, int]:
    """Sign a token for ``sub`` with ``scopes``.

    Args:
        settings: issuer, audience, algorithm and key.
        sub: the subject (user name).
        scopes: granted scopes (validated against the known ones).
        ttl_s: lifetime; ``settings.token_ttl_s`` by default.
        audience: ``aud`` claim; the API's (``settings.jwt_audience``) by default.

    Returns:
        ``(token, expires_in_seconds)``.

    Raises:
        UserError: for an unknown scope.
    """
    ttl = settings.token_ttl_s if ttl_s is None else ttl_s
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience if audience is None else audience,
        "sub": sub,
        "scopes": parse_scopes(list(scopes)),
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(
        claims,
        settings.signing_key,
        algorithm=settings.jwt_algorithm,
        headers={"kid": settings.key_id},
    )
    return token, ttl


def verify_token(settings: Settings, token: str, *, audience: str | None = None) -> Claims:
    """Verify signature, algorithm and every required claim of ``token``.

    Args:
        settings: issuer, audience, algorithm and key.
        token: the encoded JWT.
        audience: the ``aud`` required; the API's (``settings.jwt_audience``) by default.

    Raises:
        UnauthenticatedError: with a client-safe reason; never echoes the token.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise UnauthenticatedError("malformed token") from None
    if header.get("alg") != settings.jwt_algorithm:
        raise UnauthenticatedError("token algorithm not accepted")
    key = settings.verification_keys.get(str(header.get("kid")))
    if key is None:
        # Missing, from a rotated-out key, or pointing anywhere else: only ever looked up
        # among the configured keys, never used to find one.
        raise UnauthenticatedError("token key id not accepted (sign in again)")
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience if audience is None else audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options={"require": list(REQUIRED_CLAIMS), "verify_iat": True},
        )
    except jwt.ExpiredSignatureError:
        raise UnauthenticatedError("token expired") from None
    except jwt.InvalidAudienceError:
        raise UnauthenticatedError("token audience not accepted") from None
    except jwt.InvalidIssuerError:
        raise UnauthenticatedError("token issuer not accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise UnauthenticatedError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.ImmatureSignatureError:
        raise UnauthenticatedError("token issued in the future") from None
    except jwt.InvalidSignatureError:
        raise UnauthenticatedError("token signature is invalid") from None
    except jwt.InvalidTokenError:
        raise UnauthenticatedError("invalid token") from None
    scopes = payload["scopes"]
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise UnauthenticatedError("token scopes must be a list of strings")
    if not isinstance(payload["sub"], str) or not payload["sub"]:
        raise UnauthenticatedError("token subject must be a non-empty string")
    return Claims(
        sub=payload["sub"],
        scopes=tuple(s for s in scopes if s in SCOPES),
        jti=str(payload["jti"]),
        exp=int(payload["exp"]),
        iat=int(payload["iat"]),
    )


class VerifiedTokens:
    """Bearer tokens whose signature and claims were verified, so that a client's next
    request with the same token skips the JWT decoding and HMAC (PyJWT was about 6 % of
    the CPU per request under load, ``make bench``).

    Only what cannot change is remembered: a token's signature, key, algorithm, issuer,
    audience and claims, checked by :func:`verify_token` on first sight, for the same
    :class:`Settings` object. Expiry is checked again on every use (as PyJWT checks it,
    with the leeway), and revocation is checked by the caller on every request, cached
    or not. A refused token is never remembered. At most ``max_tokens`` are kept, the
    least recently used dropped first, so a flood of distinct valid tokens costs bounded
    memory and only the verification each would cost anyway.
    """

    def __init__(self, max_tokens: int = 4096, clock: Any = time.time) -> None:
        self.max_tokens = max_tokens
        self._clock = clock
        self._tokens: OrderedDict[str, tuple[Settings, Claims]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tokens)

    def verify(self, settings: Settings, token: str) -> Claims:
        """:func:`verify_token` for the API's audience, remembered (see the class doc).

        Raises:
            UnauthenticatedError: as :func:`verify_token` does.
        """
        known = self._tokens.get(token)
        if known is not None and known[0] is settings:
            claims = known[1]
            if claims.exp > self._clock() - settings.jwt_leeway_s:
                self._tokens.move_to_end(token)
                return claims
            del self._tokens[token]
            raise UnauthenticatedError("token expired")
        claims = verify_token(settings, token)
        self._tokens[token] = (settings, claims)
        if len(self._tokens) > self.max_tokens:
            self._tokens.popitem(last=False)
        return claims


def issue_session_token(settings: Settings, sub: str, scopes: Iterable[str]) -> tuple[str, int]:
    """Sign a browser session token for the UI (its own audience and lifetime)."""
    return issue_token(
        settings, sub, scopes, settings.ui_session_ttl_s, audience=settings.ui_session_audience
    )


def verify_session_token(settings: Settings, token: str) -> Claims:
    """Verify a UI session token (see :func:`verify_token`); API tokens are refused."""
    return verify_token(settings, token, audience=settings.ui_session_audience)


async def revoke_token_id(store: StateStore, jti: str, ttl_s: int) -> None:
    """Refuse the token ``jti`` from now on; kept ``ttl_s`` seconds (its remaining life)."""
    await store.revoke(REVOKED_JTI, jti, max(1, ttl_s))


async def revoke_subject(store: StateStore, sub: str, settings: Settings) -> None:
    """Refuse every token of ``sub`` issued until now (a removed user), for as long as
    any of them could still be valid."""
    await store.revoke(REVOKED_SUB, sub, settings.longest_token_ttl_s, value=time.time())


async def check_not_revoked(store: StateStore, claims: Claims) -> None:
    """Raise if ``claims``' token, or every token of its subject, was revoked.

    Raises:
        UnauthenticatedError: for a revoked token.
        NotReadyError: when the state store cannot be reached (fail closed).
    """
    try:
        token, since = await store.revoked_many(
            [(REVOKED_JTI, claims.jti), (REVOKED_SUB, claims.sub)]
        )
    except StateStoreError as exc:
        logger.error("token check refused: %s", exc)
        raise NotReadyError("the token check is unavailable; retry shortly") from None
    if token is not None or (since is not None and claims.iat <= since):
        auth_metrics().revoked()
        raise UnauthenticatedError("token revoked (sign in again)")


def is_open_path(path: str) -> bool:
    """Whether ``path`` is served without a token (health, metrics, docs, token)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def is_ui_path(path: str) -> bool:
    """Whether ``path`` belongs to the browser UI (where the session cookie is accepted)."""
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def request_cookie(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie ``name`` in the request headers, or None."""
    from starlette.requests import cookie_parser

    for key, value in headers:
        if key.lower() == b"cookie":
            found = cookie_parser(value.decode("latin-1")).get(name)
            if found:
                return found
    return None


def _has_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(k.lower() == name for k, _ in headers)


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of an ``Authorization: Bearer`` header.

    Raises:
        UnauthenticatedError: when the header is missing or not a bearer credential.
    """
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if not values:
        raise UnauthenticatedError("missing bearer token", error="invalid_request")
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class AuthMiddleware:
    """Pure ASGI middleware: token endpoint, bearer check and scope check.

    Args:
        app: the wrapped ASGI app.
        state: returns the loaded service instance (whose settings hold the keys),
            or None before it is ready. Reading the settings from the instance keeps
            one Settings object per worker, loaded in the service's ``__init__``, where
            a bad secret fails start-up.
    """

    def __init__(self, app: Any, state: StateProvider) -> None:
        self.app = app
        self.state = state
        self._store: StateStore | None = None
        self._guard: LoginGuard | None = None
        self._users: UserStore | None = None
        self._tokens = VerifiedTokens()  # bearer tokens already verified (class doc)

    def _settings(self) -> Settings:
        serving = self.state()
        if serving is None:
            raise NotReadyError("the service is starting; retry shortly")
        return serving.settings

    def _state_store(self, settings: Settings) -> StateStore:
        # Opened in the worker, on first use: a Redis client belongs to this event loop.
        if self._store is None:
            self._store = open_state(settings.state_url, settings.state_max_keys)
            logger.info("auth state (login throttle, revocations): %s", self._store.description)
        return self._store

    def _login_guard(self, settings: Settings) -> LoginGuard:
        if self._guard is None:
            self._guard = LoginGuard(settings, self._state_store(settings))
        return self._guard

    async def _verified(self, settings: Settings, claims: Claims) -> Claims:
        await check_not_revoked(self._state_store(settings), claims)
        return claims

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == TOKEN_PATH:
            await self._token_endpoint(scope, receive, send)
            return
        if is_open_path(path):
            await self.app(scope, receive, send)
            return
        if is_ui_path(path):
            await self._ui(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        settings = self._settings()
        claims = await self._verified(settings, self._tokens.verify(settings, token))
        needed = ROUTE_SCOPES.get(path.rstrip("/") or "/")
        if needed is not None and not claims.allows(needed):
            raise ForbiddenError(f"this route needs the {needed!r} scope", scope=needed)
        scope.setdefault("state", {})["tabserve_sub"] = claims.sub
        await self.app(scope, receive, send)

    async def _authenticate(
        self, settings: Settings, scope: dict[str, Any], username: str, password: str
    ) -> UserRecord:
        """Check a password against the users file, behind the login guard.

        Raises:
            TooManyRequestsError: when this user and client (or this client) failed too
                often, or (:class:`ServerBusyError`) when no verification slot freed in time.
            InvalidCredentialsError: for an unknown user or a wrong password.
            NotReadyError: when the state store cannot be reached.
        """
        client = (scope.get("client") or ("unknown", 0))[0]
        if self._users is None:  # the file is re-read on every login: edits apply at once
            self._users = UserStore(settings.resolved_users_file, hasher_for(settings))
        users = self._users
        return await self._login_guard(settings).check(
            username, client, lambda: users.authenticate(username, password)
        )

    async def _token_endpoint(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        if scope["method"] != "POST":
            raise MethodNotAllowedError("the token endpoint only accepts POST")
        settings = self._settings()
        request = Request(scope, receive)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise UnsupportedMediaTypeError(
                "the token endpoint takes an OAuth2 form "
                "(application/x-www-form-urlencoded: username, password)"
            )
        form = await _read_form(request)
        fields = {k: form.get(k) for k in ("grant_type", "username", "password", "scope")}
        missing = [k for k in ("username", "password") if not isinstance(fields[k], str)]
        if missing:
            raise RequestValidationError(
                "username and password are required",
                details=[{"field": k, "message": "field required"} for k in missing],
            )
        if fields["grant_type"] not in (None, "password"):
            raise RequestValidationError(
                "only the password grant is supported",
                details=[{"field": "grant_type", "message": "must be 'password'"}],
            )
        username, password = str(fields["username"]), str(fields["password"])
        record = await self._authenticate(settings, scope, username, password)
        scopes = list(record.scopes)
        if isinstance(fields["scope"], str) and fields["scope"].strip():
            try:
                requested = parse_scopes(fields["scope"])
            except UserError as exc:
                raise RequestValidationError(str(exc)) from None
            scopes = [s for s in scopes if s in requested]
        token, expires_in = issue_token(settings, username, scopes)
        logger.info("issued a token to %r with scopes %s (jti %s)", username, scopes, _jti(token))
        response = JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": " ".join(scopes),
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )
        await response(scope, receive, send)

    # ---- the browser UI: cookie sessions under /ui ---------------------------------
    async def _ui(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Login and logout pages, then a session (or bearer) check for the rest of /ui."""
        path = scope["path"]
        if path == UI_LOGIN_PATH:
            await self._login(scope, receive, send)
            return
        if path == UI_LOGOUT_PATH:
            await self._logout(scope)
            await _redirect(scope, receive, send, _login_url(scope, "logout"), clear_session=True)
            return
        settings = self._settings()
        headers = scope["headers"]
        if _has_header(headers, b"authorization"):  # API clients may script the UI's API
            claims = await self._verified(settings, verify_token(settings, bearer_token(headers)))
        else:
            cookie = request_cookie(headers, SESSION_COOKIE)
            try:
                if cookie is None:
                    raise UnauthenticatedError(
                        f"log in at {UI_LOGIN_PATH} (or send a bearer token)",
                        error="invalid_request",
                    )
                claims = await self._verified(settings, verify_session_token(settings, cookie))
            except UnauthenticatedError:
                if _wants_page(scope):  # a person at the browser: show the login form
                    reason = "expired" if cookie is not None else None
                    await _redirect(
                        scope, receive, send, _login_url(scope, reason), clear_session=True
                    )
                    return
                raise
        if not claims.allows(UI_SCOPE):
            raise ForbiddenError(f"the UI needs the {UI_SCOPE!r} scope", scope=UI_SCOPE)
        state = scope.setdefault("state", {})
        state["tabserve_sub"] = claims.sub
        state["tabserve_scopes"] = claims.scopes
        # The UI binds its uploads to the session (ui/guard.py).
        state["tabserve_jti"] = claims.jti
        state["tabserve_state_store"] = self._state_store(settings)
        await self.app(scope, receive, send)

    async def _logout(self, scope: dict[str, Any]) -> None:
        """Revoke the session of the request's cookie (if it is a valid one) until it
        would have expired, so a copy of the cookie is refused from now on."""
        cookie = request_cookie(scope["headers"], SESSION_COOKIE)
        if cookie is None:
            return
        settings = self._settings()
        try:
            claims = verify_session_token(settings, cookie)
        except UnauthenticatedError:
            return  # expired or forged: nothing to revoke
        ttl = claims.exp - int(time.time()) + settings.jwt_leeway_s
        try:
            await revoke_token_id(self._state_store(settings), claims.jti, ttl)
        except StateStoreError as exc:
            logger.error("logout of %r could not revoke its session: %s", claims.sub, exc)
            raise NotReadyError("logout is unavailable; retry shortly") from None
        logger.info("UI session of %r ended (jti %s revoked for %d s)", claims.sub, claims.jti, ttl)

    async def _login(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``GET /ui/login``: the form; ``POST``: check the password, start a session.

        Every outcome of a POST is a redirect (post/redirect/get), so a browser never
        re-submits a password and no error page bypasses the JSON envelope.
        """
        from starlette.requests import Request
        from starlette.responses import HTMLResponse

        settings = self._settings()
        request = Request(scope, receive)
        if scope["method"] in ("GET", "HEAD"):
            fresh_csrf = secrets.token_urlsafe(32)
            message = _LOGIN_MESSAGES.get(request.query_params.get("msg", ""), "")
            response = HTMLResponse(
                _login_page(scope.get("root_path", "") + UI_LOGIN_PATH, fresh_csrf, message),
                headers=_PAGE_HEADERS,
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
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/x-www-form-urlencoded":
            raise UnsupportedMediaTypeError("the login form is application/x-www-form-urlencoded")
        form = await _read_form(request)
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
        try:
            record = await self._authenticate(settings, scope, username, password)
        except ServerBusyError:
            await _redirect(scope, receive, send, _login_url(scope, "busy"))
            return
        except TooManyRequestsError:
            await _redirect(scope, receive, send, _login_url(scope, "throttled"))
            return
        except NotReadyError:
            await _redirect(scope, receive, send, _login_url(scope, "unavailable"))
            return
        except InvalidCredentialsError:
            await _redirect(scope, receive, send, _login_url(scope, "invalid"))
            return
        if not (UI_SCOPE in record.scopes or "admin" in record.scopes):
            logger.warning("UI login refused for %r: no %r scope", username, UI_SCOPE)
            await _redirect(scope, receive, send, _login_url(scope, "scope"))
            return
        token, ttl = issue_session_token(settings, username, record.scopes)
        logger.info("started a UI session for %r (%d s, jti %s)", username, ttl, _jti(token))
        await _redirect(
            scope,
            receive,
            send,
            scope.get("root_path", "") + UI_PREFIX + "/",
            session=(token, ttl, _secure_cookie(settings, scope)),
        )


def _jti(token: str) -> str:
    """The ``jti`` of a token this service just signed (for the log: not a secret)."""
    return str(jwt.decode(token, options={"verify_signature": False}).get("jti"))


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


async def _read_form(request: Any) -> Any:
    """The request's form; a form that cannot be parsed is the client's error (400)."""
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    try:
        return await request.form()
    except HTTPException as exc:  # Starlette's wrapping of MultiPartException
        raise MalformedRequestError(f"the form cannot be parsed: {exc.detail}") from None
    except (MultiPartException, ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(f"the form cannot be parsed: {exc}") from None


def _wants_page(scope: dict[str, Any]) -> bool:
    """Whether this is a browser asking for the UI page itself (not for its API)."""
    if scope["method"] not in ("GET", "HEAD") or scope["path"] not in (UI_PREFIX, UI_PREFIX + "/"):
        return False
    accept = b"".join(v for k, v in scope["headers"] if k.lower() == b"accept")
    return b"text/html" in accept


def _secure_cookie(settings: Settings, scope: dict[str, Any]) -> bool:
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
    from starlette.responses import RedirectResponse

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


def _login_page(action: str, csrf: str, message: str) -> str:
    """The login form (no script, no external resource)."""
    notice = f'<p class="msg" role="alert">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tabserve: log in</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f7f9; margin: 0; }}
main {{ max-width: 22rem; margin: 12vh auto; background: #fff; padding: 2rem;
       border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.12); }}
h1 {{ font-size: 1.3rem; margin-top: 0; }}
label {{ display: block; margin: .8rem 0 .3rem; font-size: .9rem; }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }}
button {{ margin-top: 1.2rem; width: 100%; padding: .6rem; font-size: 1rem;
         background: #ea580c; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }}
.msg {{ background: #fff4e5; border-left: 4px solid #ea580c; padding: .5rem .7rem; }}
</style></head>
<body><main>
<h1>tabserve model UI</h1>
{notice}
<form method="post" action="{html.escape(action)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<label for="username">User</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="login">Log in</button>
</form>
</main></body></html>
"""


__all__ = [
    "OPEN_PATHS",
    "ROUTE_SCOPES",
    "SESSION_COOKIE",
    "TOKEN_PATH",
    "UI_LOGIN_PATH",
    "UI_LOGOUT_PATH",
    "UI_PREFIX",
    "UI_SCOPE",
    "AuthMiddleware",
    "Claims",
    "bearer_token",
    "check_not_revoked",
    "is_open_path",
    "is_ui_path",
    "issue_session_token",
    "issue_token",
    "request_cookie",
    "revoke_subject",
    "revoke_token_id",
    "verify_session_token",
    "verify_token",
]
